"""deploy-test: run the validated bundle in the test environment and wait until it is ready.

With the kubernetes target: the image by digest into the test namespace, waited for as
`kubectl rollout status` does; the Route/Ingress URL is recorded for smoke-test. A failed
rollout is undone, so the test environment keeps its previous revision.
"""

from __future__ import annotations

from ..audit import record_deployment
from ..deploying import deploy_bundle, record_rollback
from ..settings import Settings
from ..state import State
from ..targets import RolledBack
from .base import StageResult, stage


class DeployResult(StageResult):
    env: str
    url: str
    revision: int
    previous_revision: int | None = None

    def lines(self) -> list[str]:
        if self.previous_revision == self.revision:  # the same template again: nothing was replaced
            return [f"{self.env}: revision {self.revision} ready at {self.url} (unchanged)"]
        was = f" (replaced revision {self.previous_revision})" if self.previous_revision else ""
        return [f"{self.env}: revision {self.revision} ready at {self.url}{was}"]


@stage("deploy-test")
def run(settings: Settings) -> DeployResult:
    state = State.load(settings.workdir)
    try:
        dep = deploy_bundle(settings, state, "test")
    except RolledBack as exc:
        record_rollback(state, "test", exc.restored, exc.failed_revision)
        state.save(settings.workdir)
        raise
    state.smoke = None
    state.save(settings.workdir)
    # success recorded
    record_deployment(settings, "test")  # audit trail: tag + metadata on the model, state.audit
    return DeployResult(
        stage="deploy-test",
        env="test",
        url=dep.url,
        revision=dep.revision,
        previous_revision=dep.previous_revision,
        message=f"{dep.model_ref} serving at {dep.url}",
    )
