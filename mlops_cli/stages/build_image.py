"""build-image: build the bundle into an image and push it, through the configured builder."""

from __future__ import annotations

from typing import Optional

from ..builders import get_builder
from ..config import Settings
from ..state import ImageRecord, State
from ..ui import progress
from .base import StageResult, stage


class BuildResult(StageResult):
    reference: Optional[str] = None
    digest: Optional[str] = None


@stage("build-image")
def run(settings: Settings) -> BuildResult:
    state = State.load(settings.workdir)
    bundle = state.require_bundle()
    if not settings.build.builder:
        return BuildResult(stage="build-image", status="skipped", message="skipped: no image builder configured")
    builder = get_builder(settings.build.builder, settings)
    progress(f"building {bundle.path} with {settings.build.builder}")
    image = builder.build_and_push(bundle.path, repository=state.model.name)
    state.image = ImageRecord(reference=image.reference, digest=image.digest)
    state.save(settings.workdir)
    return BuildResult(stage="build-image", reference=image.reference, digest=image.digest,
                       message=f"image {image.reference}@{image.digest}")
