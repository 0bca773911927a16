"""rolling-update: replace production with the smoke-tested bundle, with no failed request.

If the new revision does not become ready, the target stops it and the previous revision
keeps serving: the rollback is automatic and the state still names the old revision.
"""

from __future__ import annotations

from ..config import Settings
from ..deploying import deploy_bundle
from ..errors import StageFailed
from ..state import State
from ..audit import record_deployment
from .base import stage
from .deploy_test import DeployResult


@stage("rolling-update")
def run(settings: Settings) -> DeployResult:
    state = State.load(settings.workdir)
    state.require_smoke_passed()
    previous = state.deployments.get("prod")
    try:
        dep = deploy_bundle(settings, state, "prod")
    except StageFailed as exc:
        if previous is not None:
            raise StageFailed(f"rolling update failed, revision {previous.revision} "
                              f"({previous.model_ref}) still serves: {exc.message}") from exc
        raise
    state.save(settings.workdir)
    record_deployment(settings, "prod")  # audit trail: tag + metadata on the model, state.audit
    return DeployResult(stage="rolling-update", env="prod", url=dep.url, revision=dep.revision,
                        previous_revision=dep.previous_revision, message=f"{dep.model_ref} serving at {dep.url}")
