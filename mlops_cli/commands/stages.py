"""The seven stage commands, in pipeline order, and `mlops pipeline run` (all of them)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..cli import cli, command, emit, settings_from
from ..stages import MODULES


def _stage(name: str) -> Callable[..., Any]:
    return importlib.import_module(MODULES[name]).run


MODEL_HELP = (
    "Model reference: local:NAME[@VERSION] (local store, default newest version), clearml:MODEL_ID "
    "or s3://BUCKET/PREFIX (the prefix holding metadata.json) [config model, env MLOPS_MODEL]."
)


@command(cli, "unit-test")
@click.option(
    "--project-dir", type=click.Path(file_okay=False, path_type=Path), help="The model's project; runs its tests/."
)
@click.option("--path", "paths", multiple=True, help="A test path for pytest (repeatable).")
def unit_test(project_dir: Path | None, paths: tuple[str, ...]) -> None:
    """Run the project's tests (none: skipped, or the toolkit's smoke suite with unit_test.selftest); JUnit XML in WORKDIR/reports."""
    emit(_stage("unit-test")(settings_from(**{"unit_test.project_dir": project_dir, "unit_test.paths": paths})))


@command(cli, "validate-model")
@click.option("--model", help=MODEL_HELP)
@click.option("--allow-breaking", is_flag=True, help="Accept a breaking interface change against the deployed model.")
def validate_model(model: str | None, allow_breaking: bool) -> None:
    """Check metrics against thresholds, the validator tag, the artifact digest and the interface."""
    emit(_stage("validate-model")(settings_from(model=model, **{"validation.allow_breaking": allow_breaking})))


@command(cli, "assemble-server")
def assemble_server() -> None:
    """Fetch the validated model and render the server bundle (spec, Dockerfile, requirements)."""
    emit(_stage("assemble-server")(settings_from()))


@command(cli, "build-image")
@click.option("--builder", help="Image builder name [config build.builder].")
def build_image(builder: str | None) -> None:
    """Build and push the bundle's image; skipped while no builder is configured."""
    emit(_stage("build-image")(settings_from(**{"build.builder": builder})))


_FORCE_HELP = "kubernetes target: take over fields another field manager owns [config kubernetes.force_conflicts]."


@command(cli, "deploy-test")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def deploy_test(force: bool) -> None:
    """Deploy the bundle to the test environment and wait until it is ready."""
    emit(_stage("deploy-test")(settings_from(**{"kubernetes.force_conflicts": force})))


@command(cli, "smoke-test")
def smoke_test() -> None:
    """Send example and invalid requests to the test deployment; check answers and p95 latency."""
    emit(_stage("smoke-test")(settings_from()))


@command(cli, "rolling-update")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@click.option(
    "--approved-by", help="Who approved this release at the approval gate (recorded in state and the audit trail)."
)
@click.option("--triggered-by", help="Who asked for this release, e.g. slack:U123 or jenkins:bob (recorded likewise).")
def rolling_update(force: bool, approved_by: str | None, triggered_by: str | None) -> None:
    """Replace production with the smoke-tested bundle, with no failed request; keeps the old one on failure."""
    emit(
        _stage("rolling-update")(
            settings_from(
                **{
                    "kubernetes.force_conflicts": force,
                    "approval.approved_by": approved_by,
                    "approval.triggered_by": triggered_by,
                }
            )
        )
    )


@cli.group()
def pipeline() -> None:
    """Run all stages in order."""


@command(pipeline, "run")
@click.option("--model", help=MODEL_HELP)
@click.option("--allow-breaking", is_flag=True, help="Accept a breaking interface change against the deployed model.")
def pipeline_run(model: str | None, allow_breaking: bool) -> None:
    """Run the seven stages, stop at the first failure, print each stage's status and time."""
    from .. import run_all as pipeline_lib

    result = pipeline_lib.run(settings_from(model=model, **{"validation.allow_breaking": allow_breaking}))
    emit(result)
    pipeline_lib.raise_if_failed(result)
