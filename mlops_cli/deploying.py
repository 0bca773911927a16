"""Shared by deploy-test and rolling-update: put the current bundle into an environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, cast

from .errors import MlopsError, StageFailed
from .reconcile import reconcile, shielded
from .settings import Settings
from .state import DeploymentRecord, IntentRecord, State, now
from .targets import Journal, Release, Rollout, get_target
from .ui import progress


class _JournaledDeploy(Protocol):
    """A target whose deploy() journals its steps (those that observe or say `journals = True`)."""

    def deploy(self, env: str, release: Release, current: DeploymentRecord | None, journal: Journal) -> Rollout: ...


def _journaling(target: object) -> _JournaledDeploy:
    return cast(_JournaledDeploy, target)  # the caller checked: hasattr(target, "observe") or target.journals


def reconcile_first(settings: Settings, state: State, env: str) -> None:
    """Repair env from the journal and reality before a stage reads what serves there."""
    target = get_target(settings.deploy.target, settings)
    if hasattr(target, "observe") or getattr(target, "journals", False):
        reconcile(settings, state, env)


def deploy_bundle(settings: Settings, state: State, env: str) -> DeploymentRecord:
    """Deploy the validated bundle to env and record it in state; the caller saves state.

    First reconciles env (an earlier run may have been killed part-way). A target that can
    observe its servers journals each step in `state.intents[env]` before taking it; an abort
    (SIGTERM/SIGINT) part-way is repaired at once from that journal: production ends on exactly
    one known revision, recorded as a rollout and announced, and the abort goes on.
    """
    action = "rolling-update" if env == "prod" else "deploy-test"
    state.require_validated()
    bundle = state.require_bundle()
    target = get_target(settings.deploy.target, settings)
    image = state.require_image().reference if target.needs_image else None
    journaled = hasattr(target, "observe") or getattr(target, "journals", False)
    if journaled:
        reconcile(settings, state, env)
    current = state.deployments.get(env)

    def make_record(rollout: Rollout) -> DeploymentRecord:
        return deployment_record(settings, state, env, rollout, image)

    def journal(step: str, **fields: Any) -> None:
        known = state.intents.get(env)
        data: dict[str, Any] = (
            known.model_dump(by_alias=True)
            if known
            else {
                "env": env,
                "action": action,
                "previous_pid": current.pid if current else None,
                "previous_handle": current.handle if current else None,
            }
        )
        data.update({k: v for k, v in fields.items() if k in IntentRecord.model_fields}, step=step, at=now())
        if data.get("record") is None and data.get("revision"):
            env_cfg = getattr(settings.deploy, env)
            data["record"] = make_record(
                Rollout(
                    url=fields.get("url", f"http://{env_cfg.host}:{env_cfg.port}"),
                    revision=data["revision"],
                    previous_revision=current.revision if current else None,
                    handle=data.get("instance"),
                )
            )
        state.intents[env] = IntentRecord.model_validate(data)
        state.save(settings.workdir)

    release = Release(bundle=Path(bundle.path), image=image, state=state)
    try:
        rollout = (
            _journaling(target).deploy(env, release, current, journal=journal)
            if journaled
            else target.deploy(env, release, current)
        )
    except StageFailed:
        if state.intents.pop(env, None) is not None:  # the target stopped the new revision itself
            state.save(settings.workdir)
        raise
    except BaseException:  # an abort (SIGTERM/SIGINT) or a bug part-way: repair from the journal now
        if env in state.intents:
            with shielded():
                try:
                    reconcile(settings, state, env, why="aborted")
                except MlopsError as exc:  # e.g. the API server went away: the journal stays for the next run
                    progress(f"could not repair {env} now ({exc.message}); the next run of a stage will")
        raise
    state.intents.pop(env, None)
    record = make_record(rollout)
    old = state.deployments.get(env)
    if old is not None and (old.revision, old.handle, old.image) != (record.revision, record.handle, record.image):
        state.previous_deployments[env] = old  # what a rollback brings back
    state.deployments[env] = record
    return record


def deployment_record(
    settings: Settings, state: State, env: str, rollout: Rollout, image: str | None
) -> DeploymentRecord:
    """What state names once `rollout` of the validated bundle serves in env (the caller checked both)."""
    model, bundle = state.model, state.bundle
    assert model is not None and bundle is not None  # the callers required a validated model and its bundle
    return DeploymentRecord(
        env=env,
        target=settings.deploy.target,
        url=rollout.url,
        model_ref=model.ref,
        model_name=model.name,
        model_version=model.version,
        model_sha256=model.sha256,
        bundle_digest=bundle.bundle_digest,
        bundle_path=bundle.path,
        schema_=model.schema_,
        revision=rollout.revision,
        previous_revision=rollout.previous_revision,
        pid=rollout.pid,
        log_path=rollout.log_path,
        handle=rollout.handle,
        image=image,
        metrics=dict(model.metrics),
    )


def record_rollback(state: State, env: str, restored: Rollout, failed_revision: int | None) -> None:
    """After a rollback: the record of what serves again (if state knows it) takes the restored revision number."""
    current, previous = state.deployments.get(env), state.previous_deployments.get(env)
    for candidate in (current, previous):
        if candidate is not None and restored.image and candidate.image == restored.image:
            state.deployments[env] = candidate.model_copy(
                update={"revision": restored.revision, "previous_revision": failed_revision, "at": now()}
            )
            if candidate is previous and current is not None:
                state.previous_deployments[env] = current
            return
    state.deployments.pop(env, None)  # what serves is older than state remembers: say nothing wrong
