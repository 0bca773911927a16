"""deploy-test: run the validated bundle in the test environment and wait until it is ready."""

from __future__ import annotations

from typing import Optional

from ..config import Settings
from ..deploying import deploy_bundle
from ..state import State
from ..audit import record_deployment
from .base import StageResult, stage


class DeployResult(StageResult):
    env: str
    url: str
    revision: int
    previous_revision: Optional[int] = None

    def lines(self) -> list[str]:
        was = f" (replaced revision {self.previous_revision})" if self.previous_revision else ""
        return [f"{self.env}: revision {self.revision} ready at {self.url}{was}"]


@stage("deploy-test")
def run(settings: Settings) -> DeployResult:
    state = State.load(settings.workdir)
    dep = deploy_bundle(settings, state, "test")
    state.smoke = None
    state.save(settings.workdir)
    record_deployment(settings, "test")  # audit trail: tag + metadata on the model, state.audit
    return DeployResult(stage="deploy-test", env="test", url=dep.url, revision=dep.revision,
                        previous_revision=dep.previous_revision, message=f"{dep.model_ref} serving at {dep.url}")
