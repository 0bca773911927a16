"""Reconcile before acting: compare what state says serves with what really runs, then repair.

Every stage that touches an environment (deploy-test, rolling-update, rollback, stop) calls
`reconcile()` first, with the workdir lock held; `mlops status` calls `disagreements()`, which
only reports. For targets that can observe their servers (local; `CanReconcile`):

- an intent in the journal (a run was killed or aborted part-way): if the new revision already
  answers on the port (it took traffic), the rollout is finished: state names it and the old
  revision is stopped; otherwise the new revision is stopped and the old one keeps serving.
  Either way the outcome becomes a rollout record and is sent to the notifiers;
- servers of ours that state does not name (orphans) are stopped;
- what was repaired is said in one line.

For the kubernetes target (`inspect`/`restore_image`): a journaled rollout whose new template
(image by digest) rolled out and is available is finished (state names it, with the
Deployment's revision); one whose new template is written but does not become available within
kubernetes.rollout_timeout_s is undone as `kubectl rollout undo --to-revision` does, back to the revision state named, and waited for;
one whose write never landed (or was already put back) is recorded as undone. Without a journal
nothing is changed; `mlops status` reports a template that is not the one state names.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import MlopsError
from .settings import Settings
from .state import IntentRecord, RolloutRecord, State, now
from .targets import get_target
from .ui import progress


def _any_target(settings: Settings, state: State, env: str):
    rec = state.deployments.get(env)
    intent = state.intents.get(env)
    name = rec.target if rec else (intent.record.target if intent and intent.record else settings.deploy.target)
    return get_target(name, settings)


def _target(settings: Settings, state: State, env: str):
    target = _any_target(settings, state, env)
    return target if hasattr(target, "observe") else None


def _deployment_of(state: State, env: str) -> str | None:
    """namespace/name of env's Deployment, from the journal or the record."""
    intent, rec = state.intents.get(env), state.deployments.get(env)
    handle = (intent.instance if intent else None) or (rec.handle if rec else None)
    return handle if handle and "/" in handle else None


def _reconcile_deployment(settings: Settings, state: State, env: str, target, why: str) -> str | None:
    """Finish or undo a journaled Kubernetes rollout; save; one line or None (see the module's docstring)."""
    intent, rec = state.intents.get(env), state.deployments.get(env)
    handle = _deployment_of(state, env)
    if intent is None or handle is None:
        return None
    view = target.inspect(handle)
    new_image = intent.record.image if intent.record else None
    old_image = rec.image if rec else None
    if view.exists and new_image and view.image == new_image and not view.complete and why != "aborted":
        view = target.await_rollout(handle)  # still rolling out: give it the time the killed run would have
        # (not during an abort's repair: that runs shielded from signals and must stay short)
    what = f"{why} {intent.action} of revision {intent.revision} (at step {intent.step})"
    common: dict[str, Any] = dict(env=env, from_revision=rec.revision if rec else None, previous_image=old_image)
    if view.exists and intent.record and new_image and view.image == new_image and view.complete:
        record = intent.record.model_copy(
            update={"revision": view.revision, "at": now(), "previous_revision": rec.revision if rec else None}
        )
        if rec is not None and rec.image != record.image:
            state.previous_deployments[env] = rec  # what a rollback brings back
        state.deployments[env] = record
        message = f"{what}: finished, revision {view.revision} ({new_image}) rolled out and is available"
        outcome = RolloutRecord(
            outcome="succeeded", to_revision=view.revision, image=new_image, message=message, **common
        )
    elif not view.exists:
        message = f"{what}: undone, {handle} does not exist"
        outcome = RolloutRecord(outcome="failed", failed_revision=intent.revision, message=message, **common)
    elif new_image and view.image == new_image and new_image != old_image:
        if rec is None or not old_image:
            message = f"{what}: not finished ({view.status}), and no earlier revision is known to go back to"
            outcome = RolloutRecord(outcome="failed", failed_revision=intent.revision, message=message, **common)
        else:
            restored = target.restore_image(handle, old_image)
            state.deployments[env] = rec.model_copy(update={"revision": restored.revision, "at": now()})
            message = (
                f"{what}: undone ({view.status}), revision {rec.revision} ({old_image}) serves again "
                f"as revision {restored.revision}"
            )
            outcome = RolloutRecord(
                outcome="rolled-back",
                to_revision=restored.revision,
                image=old_image,
                failed_revision=intent.revision,
                message=message,
                **common,
            )
    else:  # the new template never landed, or was already put back (an abort's own undo)
        back = rec is not None and view.image == old_image
        if rec is not None and back and view.revision and view.revision != rec.revision:
            state.deployments[env] = rec.model_copy(update={"revision": view.revision, "at": now()})
        message = f"{what}: undone, the Deployment runs revision {view.revision} ({view.image})"
        outcome = RolloutRecord(
            outcome="rolled-back" if back else "failed",
            image=view.image,
            to_revision=view.revision if back else None,
            failed_revision=intent.revision,
            message=message,
            **common,
        )
    del state.intents[env]
    state.rollouts[env] = outcome
    state.save(settings.workdir)
    line = f"reconciled {env}: {message}"
    progress(line)
    from .outcomes import announce

    announce(settings, state, intent.action, outcome)
    return line


def _deployment_disagreements(target, state: State, env: str) -> list[str]:
    rec, intent = state.deployments.get(env), state.intents.get(env)
    handle = _deployment_of(state, env)
    out = []
    if intent is not None:
        out.append(
            f"{env}: an interrupted {intent.action} of revision {intent.revision} (step {intent.step}, "
            f"by pid {intent.holder_pid}) is pending; the next stage finishes or undoes it"
        )
    if rec is None or handle is None:
        return out
    view = target.inspect(handle)
    if not view.exists:
        return out + [f"{env}: state names revision {rec.revision} of {handle}, but the Deployment does not exist"]
    if rec.image and view.image != rec.image:
        out.append(f"{env}: {handle}'s template runs {view.image}, not {rec.image} as state says")
    elif rec.model_sha256 and view.model_sha256 and view.model_sha256 != rec.model_sha256:
        out.append(
            f"{env}: {handle}'s template is annotated with model sha256 {view.model_sha256}, "
            f"not {rec.model_sha256} as state says"
        )
    if view.revision != rec.revision:
        out.append(f"{env}: {handle} is at revision {view.revision}, state names revision {rec.revision}")
    if not view.complete:
        out.append(f"{env}: {handle} is not fully rolled out and available: {view.status}")
    return out


def _label(server) -> str:
    return f"revision {server.revision if server.revision is not None else '?'} (pid {server.pid})"


@contextmanager
def shielded() -> Iterator[None]:
    """Ignore SIGTERM/SIGINT while a repair runs: an abort must not interrupt putting production right."""
    try:
        saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: nothing to shield
        yield
        return
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def reconcile(settings: Settings, state: State, env: str, *, why: str = "found interrupted") -> str | None:
    """Make env's reality match state (finishing or undoing a journaled rollout); save; one line or None."""
    target = _any_target(settings, state, env)
    canary_line = None
    pending = state.intents.get(env)
    if hasattr(target, "canary_observe") and (
        (pending is not None and pending.action == "canary") or target.canary_observe(env, state.deployments.get(env))
    ):
        from .canary.engine import reconcile_canary  # an interrupted canary: finished or undone first

        canary_line = reconcile_canary(settings, state, env, target, why=why)
    if hasattr(target, "inspect"):
        return _reconcile_deployment(settings, state, env, target, why) or canary_line
    if not hasattr(target, "observe"):
        return canary_line
    intent: IntentRecord | None = state.intents.get(env)
    rec = state.deployments.get(env)
    observed = target.observe(env)
    by_ident = {s.ident: s for s in observed.servers}
    done: list[str] = []
    outcome: RolloutRecord | None = None
    keep = target.ident_of(rec) if rec else None
    if intent is not None:
        new = intent.instance
        took_traffic = bool(new) and observed.serving == new and new in by_ident and intent.record is not None
        what = f"{why} {intent.action} of revision {intent.revision} (at step {intent.step})"
        if took_traffic:
            assert intent.record is not None  # took_traffic says so
            server = by_ident[new]
            record = intent.record.model_copy(
                update={
                    "pid": server.pid,
                    "handle": new,
                    "at": now(),
                    "previous_revision": rec.revision if rec else None,
                }
            )
            if rec is not None:
                state.previous_deployments[env] = rec
            state.deployments[env] = record
            keep = new
            message = f"{what}: finished, revision {intent.revision} serves"
            outcome = RolloutRecord(
                env=env,
                outcome="succeeded",
                from_revision=rec.revision if rec else None,
                to_revision=intent.revision,
                image=record.image,
                previous_image=rec.image if rec else None,
                message=message,
            )
        else:
            old_alive = keep is not None and keep in by_ident
            message = (
                f"{what}: undone, revision {rec.revision} still serves"
                if old_alive and rec
                else f"{what}: undone, and no earlier revision is running"
            )
            outcome = RolloutRecord(
                env=env,
                outcome="rolled-back" if old_alive else "failed",
                from_revision=rec.revision if rec else None,
                to_revision=rec.revision if old_alive and rec else None,
                failed_revision=intent.revision,
                image=rec.image if rec else None,
                previous_image=rec.image if rec else None,
                message=message,
            )
        done.append(message)
        del state.intents[env]
    replaced = target.ident_of(rec) if rec else None
    for server in observed.servers:
        if server.ident != keep:
            target.stop_server(server)
            if server.ident == replaced:
                done.append(f"stopped {_label(server)}, which it replaced")
            elif intent is None or server.ident != intent.instance:
                done.append(f"stopped {_label(server)}, which state does not name")
    if rec is not None and state.deployments.get(env) is rec and keep not in by_ident:
        done.append(f"revision {rec.revision} (pid {rec.pid}) that state names is not running")
    if not done:
        return canary_line
    if outcome is not None:
        state.rollouts[env] = outcome
    state.save(settings.workdir)
    line = f"reconciled {env}: " + "; ".join(done)
    progress(line)
    if outcome is not None and intent is not None:  # an outcome is an intent's
        from .outcomes import announce

        announce(settings, state, intent.action, outcome)
    return line


def disagreements(settings: Settings, state: State, env: str) -> list[str]:
    """Where state and reality differ in env, without changing anything (for `mlops status`)."""
    try:
        target = _any_target(settings, state, env)
        if hasattr(target, "inspect"):
            from .workdir_lock import busy

            running = busy(settings.workdir)
            intent = state.intents.get(env)
            if intent is not None and running and running.get("pid") == intent.holder_pid:
                return [
                    f"{env}: {intent.action} of revision {intent.revision} is in progress (step {intent.step}, "
                    f"pid {intent.holder_pid})"
                ]
            return _deployment_disagreements(target, state, env)
        target = target if hasattr(target, "observe") else None
        observed = target.observe(env) if target is not None else None
    except MlopsError as exc:  # an unusable target (no podman, bad config) must not hide the rest
        return [f"{env}: cannot observe it: {exc}"]
    if target is None or observed is None:
        return []
    out = []
    rec, intent = state.deployments.get(env), state.intents.get(env)
    by_ident = {s.ident: s for s in observed.servers}
    keep = target.ident_of(rec) if rec else None
    from .workdir_lock import busy

    running = busy(settings.workdir)
    if intent is not None and running and running.get("pid") == intent.holder_pid:
        return [
            f"{env}: {intent.action} of revision {intent.revision} is in progress (step {intent.step}, "
            f"pid {intent.holder_pid})"
        ]  # not a disagreement yet: its owner is at work
    if intent is not None:
        out.append(
            f"{env}: an interrupted {intent.action} of revision {intent.revision} (step {intent.step}, "
            f"by pid {intent.holder_pid}) is pending; the next stage or `mlops stop` finishes or undoes it"
        )
    if rec is not None and keep not in by_ident:
        out.append(f"{env}: state names revision {rec.revision} (pid {rec.pid}) but it is not running")
    for server in observed.servers:
        if server.ident != keep and not (intent is not None and server.ident == intent.instance):
            out.append(f"{env}: {_label(server)} runs but state does not name it")
    if observed.serving is not None and observed.serving != keep:
        who = by_ident.get(observed.serving)
        out.append(
            f"{env}: the port is answered by {_label(who) if who else 'a server that is not ours'}, "
            f"not by the revision state names"
        )
    return out
