"""Image builders, one module each behind the ImageBuilder protocol, chosen by `build.builder`.

No builder ships yet: until one is configured, build-image reports `skipped` and the local
deploy target runs the bundle directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..registry import load

if TYPE_CHECKING:
    from ..config import Settings

BUILDERS: dict[str, str] = {}


class BuiltImage(Protocol):
    reference: str
    digest: str


class ImageBuilder(Protocol):
    def build_and_push(self, bundle: Path, repository: str) -> BuiltImage:
        """Build the bundle's Dockerfile, push it, return the reference and registry digest."""


def get_builder(name: str, settings: "Settings") -> ImageBuilder:
    return load("image builder", name, BUILDERS)(settings)
