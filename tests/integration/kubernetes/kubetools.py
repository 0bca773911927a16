"""Helpers the kubernetes tests import (a conftest is not importable by name: every test folder has one)."""

from __future__ import annotations

from mlops_cli.state import ImageRecord, SmokeRecord, State

REPOSITORY = "registry.example.test/ml/iris"


def digest_ref(char: str) -> str:
    return f"{REPOSITORY}@sha256:{char * 64}"


def set_image(settings, reference: str) -> None:
    """What build-image records after a push (the double pulls any image; its mode decides what happens)."""
    state = State.load(settings.workdir)
    repository, _, digest = reference.partition("@")
    state.image = ImageRecord(
        reference=reference,
        repository=repository,
        tag=f"{repository}:1",
        digest=digest,
        builder="buildah",
        bundle_digest=state.bundle.bundle_digest,
    )
    state.save(settings.workdir)


def set_smoke_passed(settings) -> None:
    """What smoke-test records when the test deployment answered (no pod really serves in the double)."""
    state = State.load(settings.workdir)
    state.smoke = SmokeRecord(
        passed=True,
        url=state.deployments["test"].url,
        model_sha256=state.model.sha256,
        bundle_digest=state.bundle.bundle_digest,
        requests=20,
        p95_ms=3.0,
    )
    state.save(settings.workdir)
