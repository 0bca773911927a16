"""Deploy targets, one module each behind the DeployTarget protocol, chosen by `deploy.target`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

from ..registry import load

if TYPE_CHECKING:
    from ..config import Settings
    from ..state import DeploymentRecord

TARGETS = {"local": "mlops_cli.targets.local:LocalTarget"}


@dataclass(frozen=True)
class Rollout:
    """Where a new revision runs, as the target reports it."""

    url: str
    revision: int
    previous_revision: Optional[int]
    pid: Optional[int] = None
    log_path: Optional[str] = None


class DeployTarget(Protocol):
    def deploy(self, env: str, bundle: Path, current: Optional["DeploymentRecord"]) -> Rollout:
        """Run the bundle in env, replacing `current` with no failed request; wait until ready.

        On failure the current revision keeps serving and a StageFailed says why.
        """

    def stop(self, current: "DeploymentRecord") -> bool:
        """Stop what runs in the environment; False when nothing was running."""

    def is_running(self, current: "DeploymentRecord") -> bool:
        """Whether the deployment still serves."""


def get_target(name: str, settings: "Settings") -> DeployTarget:
    return load("deploy target", name, TARGETS)(settings)
