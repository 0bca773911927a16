"""rollback: on request, run the environment's previous revision again (`kubectl rollout undo`).

Only targets that keep earlier revisions can (kubernetes); the outcome is recorded in state
and sent to the notifiers like a rolling update's. It reconciles first (mlops_cli/reconcile.py):
a rollout a killed run left half done is finished or undone before "previous" is worked out.
"""

from __future__ import annotations

from ..deploying import record_rollback
from ..errors import PrerequisiteError, StageFailed, UsageError
from ..outcomes import announce
from ..reconcile import reconcile
from ..render import check_env
from ..settings import Settings
from ..state import RolloutRecord, State
from ..targets import RolledBack, get_target
from .base import StageResult, stage


class RollbackResult(StageResult):
    env: str
    revision: int
    previous_revision: int | None = None
    image: str | None = None
    note: str = ""

    def lines(self) -> list[str]:
        return [
            f"{self.env}: rolled back; revision {self.revision} ({self.image or 'image unknown'}) serves "
            f"instead of revision {self.previous_revision}"
        ] + ([self.note] if self.note else [])


def run(settings: Settings, env: str) -> RollbackResult:
    """Roll env back to its previous revision; recorded in state as the `rollback` stage."""
    check_env(env)
    return stage("rollback")(lambda s: _rollback(s, env))(settings)


def _rollback(settings: Settings, env: str) -> RollbackResult:
    state = State.load(settings.workdir)
    if env in state.deployments or env in state.intents:  # an interrupted earlier run is finished or undone first
        reconcile(settings, state, env)
    current = state.deployments.get(env)
    if current is None:
        raise PrerequisiteError(
            f"nothing is deployed to {env} by this workdir", hint="run deploy-test / rolling-update first"
        )
    target = get_target(current.target, settings)
    if not hasattr(target, "rollback"):
        raise UsageError(
            f"the {current.target} target keeps no earlier revision to roll back to",
            hint="deploy the earlier model again, or use deploy.target: kubernetes",
        )
    try:
        restored = target.rollback(env, current)
    except StageFailed as exc:
        if isinstance(exc, RolledBack):  # what served before serves again, under a new revision number
            record_rollback(state, env, exc.restored, exc.failed_revision)
        state.rollouts[env] = RolloutRecord(
            env=env, outcome="failed", from_revision=current.revision, previous_image=current.image, message=exc.message
        )
        state.save(settings.workdir)
        announce(settings, state, "rollback", state.rollouts[env])
        raise
    record_rollback(state, env, restored, current.revision)
    state.rollouts[env] = RolloutRecord(
        env=env,
        outcome="succeeded",
        from_revision=current.revision,
        to_revision=restored.revision,
        failed_revision=current.revision,
        image=restored.image,
        previous_image=current.image,
        message=f"revision {current.revision} replaced by the previous one",
    )
    state.smoke = None if env == "test" else state.smoke
    state.save(settings.workdir)
    # success recorded
    announce(settings, state, "rollback", state.rollouts[env])
    note = (
        ""
        if env in state.deployments
        else f"state holds no record of the bundle behind {restored.image}, so it names no deployment for {env}"
    )
    return RollbackResult(
        stage="rollback",
        env=env,
        revision=restored.revision,
        previous_revision=current.revision,
        image=restored.image,
        note=note,
        message=f"{env} rolled back to revision {restored.revision}",
    )
