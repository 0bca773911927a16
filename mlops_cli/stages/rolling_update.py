"""rolling-update: replace production with the smoke-tested bundle, with no failed request.

If the new revision does not become ready, the target goes back to the previous one (the
local and container targets stop the new process; the kubernetes target undoes the rollout
as `kubectl rollout undo` does and waits until the previous revision serves again). The
outcome, with old and new revisions, is recorded in state and sent to the notifiers.
"""

from __future__ import annotations

import os

from ..audit import Who, record_deployment
from ..deploying import deploy_bundle, reconcile_first, record_rollback
from ..errors import StageFailed, TemporaryError, UsageError
from ..outcomes import announce
from ..settings import Settings
from ..state import RolloutRecord, State
from ..targets import RollbackFailed, RolledBack
from ..ui import progress
from .base import stage
from .deploy_to_test_env import DeployResult


def _who(settings: Settings) -> Who:
    """Who asked and who approved; with approval.required, no approver means no production change."""
    approval = settings.approval
    if approval.required and not (approval.approved_by or "").strip():
        raise UsageError(
            "production needs an approver: approval.required is on",
            hint="pass --approved-by WHO after the approval gate, or set approval.required false",
        )
    return Who(
        triggered_by=approval.triggered_by or None,
        approved_by=approval.approved_by or None,
        build_url=os.environ.get("BUILD_URL") or None,
    )


@stage("rolling-update")
def run(settings: Settings) -> DeployResult:
    who = _who(settings)
    state = State.load(settings.workdir)
    state.require_smoke_passed()
    reconcile_first(settings, state, "prod")  # an interrupted earlier run is finished or undone first
    previous = state.deployments.get("prod")
    if settings.rollout.strategy == "canary":
        from ..canary.engine import rolling_update_canary  # rollout.strategy canary: docs/canary.md

        if previous is not None:
            return rolling_update_canary(settings, state, who)
        progress("rollout.strategy canary: nothing serves in prod yet, so this first release is a rolling one")
    try:
        dep = deploy_bundle(settings, state, "prod")
    except RolledBack as exc:
        record_rollback(state, "prod", exc.restored, exc.failed_revision)
        state.rollouts["prod"] = RolloutRecord(
            env="prod",
            outcome="rolled-back",
            from_revision=previous.revision if previous else None,
            to_revision=exc.restored.revision,
            failed_revision=exc.failed_revision,
            image=exc.restored.image,
            previous_image=previous.image if previous else None,
            message=exc.message,
        )
        state.save(settings.workdir)
        announce(settings, state, "rolling-update", state.rollouts["prod"])
        raise
    except StageFailed as exc:
        state.rollouts["prod"] = RolloutRecord(
            env="prod",
            outcome="failed",
            from_revision=previous.revision if previous else None,
            previous_image=previous.image if previous else None,
            message=exc.message,
        )
        state.save(settings.workdir)
        announce(settings, state, "rolling-update", state.rollouts["prod"])
        if isinstance(exc, RollbackFailed):  # neither revision is known to serve: say so, claim nothing
            raise StageFailed(
                f"rolling update failed and so did the rollback; production may not be serving: {exc.message}",
                hint=exc.hint,
            ) from exc
        if previous is not None:
            raise StageFailed(
                f"rolling update failed, revision {previous.revision} "
                f"({previous.model_ref}) still serves: {exc.message}"
            ) from exc
        raise
    except TemporaryError as exc:  # the API server went away part-way: what serves is not known, so tell people
        state.rollouts["prod"] = RolloutRecord(
            env="prod",
            outcome="failed",
            from_revision=previous.revision if previous else None,
            previous_image=previous.image if previous else None,
            message=f"interrupted, production's state is unknown: {exc.message}",
        )
        state.save(settings.workdir)
        announce(settings, state, "rolling-update", state.rollouts["prod"])
        raise
    state.rollouts["prod"] = RolloutRecord(
        env="prod",
        outcome="succeeded",
        from_revision=dep.previous_revision,
        to_revision=dep.revision,
        image=dep.image,
        previous_image=previous.image if previous else None,
        message=f"{dep.model_ref} serving at {dep.url}",
    )
    state.save(settings.workdir)
    # success recorded
    record_deployment(settings, "prod", who)  # audit trail: tag + metadata on the model, state.audit
    announce(settings, state, "rolling-update", state.rollouts["prod"])
    return DeployResult(
        stage="rolling-update",
        env="prod",
        url=dep.url,
        revision=dep.revision,
        previous_revision=dep.previous_revision,
        message=f"{dep.model_ref} serving at {dep.url}",
    )
