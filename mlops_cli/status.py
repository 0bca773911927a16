"""`mlops status` and `mlops stop`: what the state file says, and what really runs.

Both work when mlops.yaml or state.json is broken (the moment an operator needs them most):
they say so and act on what they can find (the local target's server processes of this
workdir, found by their ready-file paths). A corrupt state file is moved aside only on request.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError, MlopsError, UsageError
from .reconcile import disagreements
from .settings import Settings
from .stages import STAGES
from .state import State
from .targets import CanReconcile, get_target
from .workdir_lock import hold

ENVS = ("test", "prod")


def load_state_leniently(settings: Settings, move_aside: bool = False) -> tuple[State, list[str], bool]:
    """(state, problems, writable): an unreadable state file becomes an empty State, said in one line.

    writable is False while a corrupt file stays in place: it is never overwritten unasked.
    """
    try:
        return State.load(settings.workdir), [], True
    except ConfigError as exc:
        path = State.path(settings.workdir)
        if not move_aside:
            return State(), [f"{exc.message}; showing what runs (move it aside with --move-aside-corrupt-state)"], False
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        path.rename(aside)
        return State(), [f"{exc.message}; moved it aside to {aside}"], True


def _observed_envs(settings: Settings, state: State) -> list[str]:
    return sorted(set(ENVS) | set(state.deployments) | set(state.intents))


class StatusResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    workdir: str
    state: dict[str, Any]
    running: dict[str, bool]
    problems: list[str] = []  # a broken config or state file, said in one line each
    disagreements: list[str] = []  # where state and what runs differ
    supervision: dict[str, dict[str, Any]] = {}  # env -> its supervisor's report (restarts, last exit)
    looked_in: str = ""  # the state file read (absolute), and where else state was found
    hint: str | None = None

    def lines(self) -> list[str]:
        s = self.state
        out = [f"workdir {self.workdir}" + (f" (read {self.looked_in})" if self.looked_in and not self.hint else "")]
        out += [f"WARNING    {p}" for p in self.problems]
        out += [f"HINT       {self.hint}"] if self.hint else []
        out += [f"DISAGREES  {d}" for d in self.disagreements]
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
            sup = self.supervision.get(env)
            if sup and sup.get("restarts"):
                alive += f", restarted {sup['restarts']} time(s) by its supervisor"
                alive += f", last after exit code {sup['last_exit']}" if sup.get("last_exit") is not None else ""
                alive += f" at {sup['restarted_at']}" if sup.get("restarted_at") else ""
            if sup and sup.get("gave_up"):
                alive += ", its supervisor GAVE UP restarting it"
            out.append(
                f"{env:<10} {dep['model_ref']} revision {dep['revision']} at {dep['url']} ({alive}, since {dep['at']})"
            )
        latest = {a["env"]: a for a in s.get("audit", [])}
        for env, rec in sorted(latest.items()):
            tag = f"tag {rec['tag']}, " if rec.get("tag") else ""
            out.append(f"audit      {env}: {rec['model_ref']} {tag}{rec['digest']} since {rec['at']} ({rec['detail']})")
            who = [f"{k.replace('_', ' ')} {rec[k]}" for k in ("triggered_by", "approved_by") if rec.get(k)]
            if who:
                out.append(f"             {', '.join(who)}")
        for ap in s.get("approvals", [])[-1:]:
            out.append(
                f"approval   {ap['decision']}"
                + (f" by {ap['by']}" if ap.get("by") else "")
                + f" of {ap.get('model_ref') or 'the model'} at {ap['at']}"
            )
        for env, ro in sorted(s.get("rollouts", {}).items()):
            revisions = f"revision {ro.get('from_revision') or 'none'} -> {ro.get('to_revision') or 'none'}"
            out.append(f"rollout    {env}: {ro['outcome']} ({revisions}) at {ro['at']}")
        if s.get("smoke"):
            sm = s["smoke"]
            out.append(
                f"smoke      {'passed' if sm['passed'] else 'FAILED'}: p95 {sm['p95_ms']} ms over {sm['requests']} requests"
            )
            out += [f"             {p}" for p in sm.get("problems", [])]
        stages = s.get("stages", {})
        for name in [n for n in STAGES if n in stages]:
            rec = stages[name]
            out.append(f"stage      {name:<16} {rec['status']:<8} {rec['duration_s']:7.1f}s  {rec['started_at']}")
        return out


def status(settings: Settings, problems: list[str] | None = None, move_aside: bool = False) -> StatusResult:
    """What state says, whether each deployment really serves (by identity), and every disagreement."""
    problems = list(problems or [])
    if move_aside:
        with hold(settings.workdir, "mlops status --move-aside-corrupt-state", settings.lock_wait_s):
            state, found, _ = load_state_leniently(settings, move_aside)
    else:
        state, found, _ = load_state_leniently(settings, move_aside)
    problems += found
    running, differ, supervision = {}, [], {}
    for env, dep in state.deployments.items():
        try:
            target = get_target(dep.target, settings)
            running[env] = target.is_running(dep)
            report = target.supervision(dep) if hasattr(target, "supervision") else None
            if report:
                supervision[env] = report
        except ConfigError as exc:
            running[env] = False
            problems.append(f"{env}: cannot check the {dep.target} target: {exc}")
    for env in _observed_envs(settings, state):
        differ += disagreements(settings, state, env)
    looked_in, hint = where_state_is(settings)
    return StatusResult(
        workdir=str(settings.workdir),
        state=state.model_dump(mode="json", by_alias=True),
        running=running,
        problems=problems,
        disagreements=differ,
        supervision=supervision,
        looked_in=looked_in,
        hint=hint,
    )


def where_state_is(settings: Settings) -> tuple[str, str | None]:
    """The state file status read, and when it does not exist, the workdirs beside it that have state."""
    import shlex
    from pathlib import Path

    path = State.path(settings.workdir).resolve()
    if path.is_file():
        return str(path), None
    parent = path.parent.parent
    found = sorted(p.parent for p in parent.glob("*/state.json") if p.parent != path.parent) if parent.is_dir() else []
    if not found:
        return str(path), (
            f"no state in {path}: nothing has run with this workdir; pick another with --workdir or MLOPS_WORKDIR"
        )
    names = ", ".join(shlex.quote(str(p.relative_to(parent) if parent == Path.cwd().resolve() else p)) for p in found)
    first = shlex.quote(str(found[0].relative_to(parent) if parent == Path.cwd().resolve() else found[0]))
    return str(path), f"no state in {path}; state found in {names}: try `mlops status --workdir {first}`"


class StopResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    stopped: list[str]
    not_running: list[str]
    problems: list[str] = []
    notes: list[str] = []  # servers stopped that state did not name, journal entries dropped

    def lines(self) -> list[str]:
        out = [f"warning: {p}" for p in self.problems]
        out += [f"stopped {env}" for env in self.stopped] + [f"{env} was not running" for env in self.not_running]
        out += self.notes
        return out if (self.stopped or self.not_running or self.notes) else out + ["nothing deployed"]


def stop(
    settings: Settings, env: str | None = None, problems: list[str] | None = None, move_aside: bool = False
) -> StopResult:
    """Stop env (or every env): what state names and every server of ours found running, under the lock."""
    with hold(settings.workdir, "mlops stop", settings.lock_wait_s):
        return _stop(settings, env, list(problems or []), move_aside)


def _stop(settings: Settings, env: str | None, problems: list[str], move_aside: bool) -> StopResult:
    state, found, writable = load_state_leniently(settings, move_aside)
    problems += found
    if env is not None and env not in state.deployments and env not in ENVS:
        raise UsageError(f"nothing is deployed to {env!r}; deployed: {', '.join(state.deployments) or 'none'}")
    envs = [env] if env else _observed_envs(settings, state)
    stopped: list[str] = []
    idle: list[str] = []
    notes: list[str] = []
    for name in envs:
        dep = state.deployments.get(name)
        try:
            target = get_target(dep.target if dep else settings.deploy.target, settings)
        except ConfigError as exc:
            if dep is not None:  # nothing recorded there: an unusable default target is no news
                problems.append(f"{name}: cannot reach the {dep.target} target: {exc}")
            continue
        did = dep is not None and target.stop(dep)
        observer = cast(CanReconcile, target)  # used only where hasattr(target, "observe")
        if hasattr(target, "stop_split") and target.stop_split(name):  # a canary's HAProxy goes too
            did = True
            notes.append(f"stopped the HAProxy of {name}'s canary")
        try:
            servers = observer.observe(name).servers if hasattr(target, "observe") else ()
        except MlopsError as exc:
            problems.append(f"{name}: cannot list what runs: {exc.message}")
            servers = ()
        for server in servers:  # orphans, a half-done rollout's new revision
            observer.stop_server(server)
            did = True
            if dep is None or server.ident != observer.ident_of(dep):
                notes.append(
                    f"stopped revision {server.revision} of {name} (pid {server.pid}), which state did not name"
                )
        intent = state.intents.pop(name, None)
        if intent is not None:
            notes.append(f"dropped the journal of an interrupted {intent.action} of revision {intent.revision}")
        if dep is not None or did:
            (stopped if did else idle).append(name)
        state.deployments.pop(name, None)
        if writable and (dep is not None or intent is not None):
            state.save(settings.workdir)
    return StopResult(stopped=stopped, not_running=idle, problems=problems, notes=notes)
