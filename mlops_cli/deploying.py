"""Shared by deploy-test and rolling-update: put the current bundle into an environment."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .config import Settings
from .state import DeploymentRecord, State, now
from .targets import Release, Rollout, get_target


def deploy_bundle(settings: Settings, state: State, env: str) -> DeploymentRecord:
    """Deploy the validated bundle to env and record it in state; the caller saves state."""
    model, _ = state.require_validated()
    bundle = state.require_bundle()
    target = get_target(settings.deploy.target, settings)
    image = state.require_image().reference if target.needs_image else None
    rollout = target.deploy(env, Release(bundle=Path(bundle.path), image=image), state.deployments.get(env))
    record = DeploymentRecord(
        env=env, target=settings.deploy.target, url=rollout.url, model_ref=model.ref, model_name=model.name,
        model_version=model.version, model_sha256=model.sha256, bundle_digest=bundle.bundle_digest,
        bundle_path=bundle.path, schema=model.schema_, revision=rollout.revision,
        previous_revision=rollout.previous_revision, pid=rollout.pid, log_path=rollout.log_path,
        handle=rollout.handle, image=image, metrics=dict(model.metrics),
    )
    old = state.deployments.get(env)
    if old is not None and (old.revision, old.handle, old.image) != (record.revision, record.handle, record.image):
        state.previous_deployments[env] = old  # what a rollback brings back
    state.deployments[env] = record
    return record


def record_rollback(state: State, env: str, restored: Rollout, failed_revision: Optional[int]) -> None:
    """After a rollback: the record of what serves again (if state knows it) takes the restored revision number."""
    current, previous = state.deployments.get(env), state.previous_deployments.get(env)
    for candidate in (current, previous):
        if candidate is not None and restored.image and candidate.image == restored.image:
            state.deployments[env] = candidate.model_copy(update={
                "revision": restored.revision, "previous_revision": failed_revision, "at": now()})
            if candidate is previous and current is not None:
                state.previous_deployments[env] = current
            return
    state.deployments.pop(env, None)  # what serves is older than state remembers: say nothing wrong
