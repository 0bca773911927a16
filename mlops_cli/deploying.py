"""Shared by deploy-test and rolling-update: put the current bundle into an environment."""

from __future__ import annotations

from pathlib import Path

from .config import Settings
from .state import DeploymentRecord, State
from .targets import Release, get_target


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
    state.deployments[env] = record
    return record
