"""`mlops status` and `mlops stop`: what the state file says, and what still runs."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from .config import Settings
from .errors import UsageError
from .stages import STAGES
from .state import State
from .targets import get_target


class StatusResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    workdir: str
    state: dict[str, Any]
    running: dict[str, bool]

    def lines(self) -> list[str]:
        s = self.state
        out = [f"workdir {self.workdir}"]
        model, val = s.get("model"), s.get("validation")
        if val:
            verdict = "passed" if val["passed"] else "FAILED"
            out.append(f"model      {val['model_ref']}: validation {verdict} at {val['at']}")
            out += [f"             {'ok ' if c['passed'] else 'NO '} {c['name']}: {c['detail']}" for c in val["checks"]]
        elif model:
            out.append(f"model      {model['ref']}")
        if s.get("bundle"):
            out.append(f"bundle     {s['bundle']['path']}")
        if s.get("image"):
            out.append(f"image      {s['image']['reference']}@{s['image'].get('digest')}")
        for env, dep in sorted(s.get("deployments", {}).items()):
            alive = "running" if self.running.get(env) else "NOT RUNNING"
            out.append(f"{env:<10} {dep['model_ref']} revision {dep['revision']} at {dep['url']} ({alive}, since {dep['at']})")
        latest = {a["env"]: a for a in s.get("audit", [])}
        for env, rec in sorted(latest.items()):
            tag = f"tag {rec['tag']}, " if rec.get("tag") else ""
            out.append(f"audit      {env}: {rec['model_ref']} {tag}{rec['digest']} since {rec['at']} ({rec['detail']})")
            who = [f"{k.replace('_', ' ')} {rec[k]}" for k in ("triggered_by", "approved_by") if rec.get(k)]
            if who:
                out.append(f"             {', '.join(who)}")
        for ap in s.get("approvals", [])[-1:]:
            out.append(f"approval   {ap['decision']}" + (f" by {ap['by']}" if ap.get("by") else "")
                       + f" of {ap.get('model_ref') or 'the model'} at {ap['at']}")
        for env, ro in sorted(s.get("rollouts", {}).items()):
            revisions = f"revision {ro.get('from_revision') or 'none'} -> {ro.get('to_revision') or 'none'}"
            out.append(f"rollout    {env}: {ro['outcome']} ({revisions}) at {ro['at']}")
        if s.get("smoke"):
            sm = s["smoke"]
            out.append(f"smoke      {'passed' if sm['passed'] else 'FAILED'}: p95 {sm['p95_ms']} ms over {sm['requests']} requests")
            out += [f"             {p}" for p in sm.get("problems", [])]
        stages = s.get("stages", {})
        for name in [n for n in STAGES if n in stages]:
            rec = stages[name]
            out.append(f"stage      {name:<16} {rec['status']:<8} {rec['duration_s']:7.1f}s  {rec['started_at']}")
        return out


def status(settings: Settings) -> StatusResult:
    state = State.load(settings.workdir)
    running = {}
    for env, dep in state.deployments.items():
        running[env] = get_target(dep.target, settings).is_running(dep)
    return StatusResult(workdir=str(settings.workdir), state=state.model_dump(mode="json", by_alias=True),
                        running=running)


class StopResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    stopped: list[str]
    not_running: list[str]

    def lines(self) -> list[str]:
        out = [f"stopped {env}" for env in self.stopped] + [f"{env} was not running" for env in self.not_running]
        return out or ["nothing deployed"]


def stop(settings: Settings, env: Optional[str] = None) -> StopResult:
    state = State.load(settings.workdir)
    if env is not None and env not in state.deployments:
        raise UsageError(f"nothing is deployed to {env!r}; deployed: {', '.join(state.deployments) or 'none'}")
    envs = [env] if env else sorted(state.deployments)
    stopped, idle = [], []
    for name in envs:
        dep = state.deployments[name]
        (stopped if get_target(dep.target, settings).stop(dep) else idle).append(name)
        del state.deployments[name]
        state.save(settings.workdir)
    return StopResult(stopped=stopped, not_running=idle)
