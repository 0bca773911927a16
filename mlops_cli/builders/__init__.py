"""Image builders, one module each behind the ImageBuilder protocol, chosen by `build.builder`.

The build-image stage prepares the build context (the bundle plus the wheels of its pinned
requirements, so the build needs no network), asks the builder to build and tag it, then to
push it; the digest the registry returns is what every later stage deploys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..backends import load
from ..errors import MlopsError, StageFailed, TemporaryError
from ..retry import call_with_retries
from ..ui import progress

if TYPE_CHECKING:
    from ..settings import Settings

BUILDERS = {
    "buildah": "mlops_cli.builders.buildah:BuildahBuilder",
    "docker": "mlops_cli.builders.docker:DockerBuilder",
}

AUTH_FAILURE = re.compile(r"unauthori[sz]ed|authentication required|\b40[13]\b|denied|forbidden", re.I)
TRANSIENT_FAILURE = re.compile(
    r"connection refused|connection reset|no such host|i/o timeout|timeout|\bEOF\b|dial tcp|"
    r"\b50[0234]\b|service unavailable|bad gateway|temporar",
    re.I,
)


@dataclass(frozen=True)
class BuildRequest:
    context: Path  # holds Dockerfile, the bundle's files and wheels/
    tag: str  # registry/repository:tag
    labels: dict[str, str]


class ImageBuilder(Protocol):
    def build(self, request: BuildRequest) -> None:
        """Build the context's Dockerfile and tag it locally; StageFailed with the log's tail on failure."""

    def close(self) -> None:
        """Release the builder's connections."""

    def push(self, tag: str) -> str:
        """Push the tag; return the manifest digest (`sha256:...`) the registry stored.

        Raise TemporaryError for what a retry may cure, StageFailed for what it cannot.
        """


def get_builder(name: str, settings: Settings) -> ImageBuilder:
    return load("image builder", name, BUILDERS)(settings)


def registry_failure(registry: str, output: str) -> MlopsError:
    """The error for a failed push, from what the tool said: auth, transient, or other."""
    last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
    if AUTH_FAILURE.search(output):
        return StageFailed(
            f"registry {registry} refused the credentials or access: {last}",
            hint="check build.username and MLOPS_BUILD__PASSWORD / build.password_file",
        )
    if TRANSIENT_FAILURE.search(output):
        return TemporaryError(f"registry {registry} did not answer: {last}")
    return StageFailed(f"push to {registry} failed: {last}")


def with_retries(action: Callable[[], str], *, retries: int, backoff_s: float, what: str) -> str:
    """Run action; on TemporaryError try again up to `retries` times, with backoff (mlops_cli.retry)."""

    def say(exc: BaseException, delay: float) -> None:
        progress(f"{what} failed ({getattr(exc, 'message', exc)}); retrying in {delay:.1f} s")

    return call_with_retries(action, retries=retries, backoff_s=backoff_s, on_retry=say)
