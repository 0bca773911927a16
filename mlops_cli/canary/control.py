"""`mlops canary status|promote|abort`: what the canary of an environment does, and a human's say in it.

promote skips the remaining steps; abort stops the canary now. When a `mlops rolling-update` runs
the canary (it holds the workdir lock, e.g. waiting in a pause), they leave a request its engine
polls and acts on within a second. When none runs, an interrupted canary left running is finished
(promote) or undone (abort) here, under the lock, as reconciliation would.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..config import Settings
from ..errors import PrerequisiteError
from ..state import State
from ..workdir_lock import busy, hold
from . import engine

RUNNING = ("starting", "running", "promoting", "aborting")


class CanaryStatus(BaseModel):
    model_config = ConfigDict(frozen=True)
    env: str
    running: bool  # a rolling-update runs it now
    holder: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None  # state.canaries[env]
    live_weight: int | None = None  # what the traffic split says now, when the target can tell

    def lines(self) -> list[str]:
        if self.canary is None:
            return [f"{self.env}: no canary release recorded"]
        c = self.canary
        who = f" (rolling-update pid {self.holder.get('pid')})" if self.running and self.holder else ""
        out = [
            f"{self.env}: canary of revision {c.get('to_revision')} beside revision {c.get('from_revision')}: "
            f"{c.get('status')}{who}, {c.get('weight')} % to the canary"
            + (f" (HAProxy says {self.live_weight} %)" if self.live_weight is not None else "")
        ]
        if c.get("reason"):
            out.append(f"  {c['reason']}")
        for step in c.get("steps") or []:
            out.append(
                f"  {step['index']:>2}. {step['step']:<24} {step['outcome']:<12} {step.get('detail') or ''}".rstrip()
            )
        return out


class CanaryActionResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    env: str
    action: str
    done: str  # "requested" (the running engine acts) or "done" (acted here)
    message: str

    def lines(self) -> list[str]:
        return [self.message]


def status(settings: Settings, env: str = "prod") -> CanaryStatus:
    state = State.load(settings.workdir)
    rec = state.canaries.get(env)
    holder = busy(settings.workdir)
    running = bool(rec and rec.status in RUNNING and holder and holder.get("pid") == rec.holder_pid)
    live = None
    if rec is not None and rec.status in RUNNING:
        try:
            from ..targets import get_target
            from . import haproxy

            target = get_target(settings.deploy.target, settings)
            run_dir = getattr(target, "run_dir", None)
            if run_dir is not None and haproxy.running_pid(run_dir, env):
                live = haproxy.current_weights(haproxy.paths(run_dir, env)[1]).get("canary")
        except Exception:  # status must show what it can
            live = None
    return CanaryStatus(
        env=env,
        running=running,
        holder=holder if running else None,
        canary=rec.model_dump(mode="json") if rec else None,
        live_weight=live,
    )


def act(settings: Settings, env: str, action: str, wait_s: float = 10.0) -> CanaryActionResult:
    """promote or abort env's canary: ask the running engine, or act on an interrupted one under the lock."""
    state = State.load(settings.workdir)
    rec = state.canaries.get(env)
    holder = busy(settings.workdir)
    if rec is not None and rec.status in RUNNING and holder and holder.get("pid") == rec.holder_pid:
        engine.request(settings.workdir, env, action)
        deadline = time.monotonic() + wait_s  # show that it was taken up (the engine removes the request)
        while time.monotonic() < deadline and engine.request_path(settings.workdir, env).exists():
            time.sleep(0.1)
        taken = not engine.request_path(settings.workdir, env).exists()
        return CanaryActionResult(
            env=env,
            action=action,
            done="requested",
            message=(
                f"asked the running rolling-update (pid {holder.get('pid')}) to {action} the canary of {env}"
                + ("; it took the request" if taken else "; it has not taken the request yet (it acts between steps)")
            ),
        )
    with hold(settings.workdir, f"mlops canary {action}", settings.lock_wait_s):
        from ..targets import get_target

        state = State.load(settings.workdir)
        target = get_target(settings.deploy.target, settings)
        if not hasattr(target, "canary_observe") or target.canary_observe(env, state.deployments.get(env)) is None:
            raise PrerequisiteError(
                f"no canary is running in {env}",
                hint="start one with `mlops rolling-update` and rollout.strategy canary",
            )
        intent = state.intents.get(env)
        if action == "promote" and (intent is None or intent.action != engine.ACTION or intent.record is None):
            raise PrerequisiteError(
                f"the journal of {env}'s canary is gone, so what it would promote is not known",
                hint="abort it with `mlops canary abort` and release again",
            )
        line = engine.reconcile_canary(
            settings, state, env, target, why=f"{action} of the", promote=action == "promote"
        )
    return CanaryActionResult(env=env, action=action, done="done", message=line or f"nothing to {action} in {env}")
