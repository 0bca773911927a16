"""Operating deployments: status, stop, rollback, render (GitOps manifests), monitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..cli import _OPTIONS, cli, command, emit, settings_from


@command(cli, "rollback")
@click.option("--env", required=True, type=click.Choice(["test", "prod"]), help="The environment to roll back.")
def rollback(env: str) -> None:
    """Run the environment's previous revision again, as `kubectl rollout undo` (kubernetes target)."""
    from ..stages import rollback as rollback_stage

    emit(rollback_stage.run(settings_from(), env))


@command(cli, "render")
@click.option("--env", type=click.Choice(["test", "prod"]), help="The environment to render for.")
@click.option(
    "--kustomize", is_flag=True, help="Write a Kustomize base and overlays/ENV for every environment instead."
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory to write into.")
@click.option("--image", help="REPOSITORY@sha256:DIGEST to deploy [default: the image in state].")
@click.option("--allow-tag", is_flag=True, help="Accept --image as a moving tag for prod.")
@click.option(
    "--model", "model_ref", help="Model reference whose metadata labels the objects [default: state's model]."
)
def render(
    env: str | None, kustomize: bool, out: Path, image: str | None, allow_tag: bool, model_ref: str | None
) -> None:
    """Write the environment's validated Kubernetes/OpenShift manifests (for GitOps; no state needed with --image)."""
    from .. import gitops
    from .. import render as render_lib

    if kustomize and env:
        raise click.UsageError("--kustomize writes every environment; give --env or --kustomize, not both")
    if kustomize:
        emit(gitops.run(settings_from(), out, image=image, allow_tag=allow_tag, model_ref=model_ref))
    else:
        emit(render_lib.run(settings_from(), env, out, image=image, allow_tag=allow_tag, model_ref=model_ref))


def lenient_settings() -> tuple[Any, list[str]]:
    """Settings for status/stop, which must work when mlops.yaml or MLOPS_* is broken: then the
    defaults (with --workdir) and the problem in one line."""
    from ..errors import ConfigError

    try:
        return settings_from(), []
    except ConfigError as exc:
        from ..settings import Settings

        workdir = Path(_OPTIONS["workdir"] or Settings.model_fields["workdir"].default)
        return Settings(workdir=workdir), [f"{exc.message}; using the default settings (workdir {workdir})"]


_MOVE_ASIDE = click.option(
    "--move-aside-corrupt-state",
    "move_aside",
    is_flag=True,
    help="If state.json is not valid, rename it to state.json.corrupt-<time> (never done unasked).",
)


@command(cli, "status")
@_MOVE_ASIDE
def status(move_aside: bool) -> None:
    """Show the state and what really runs: model, bundle, deployments, disagreements, stage history."""
    from ..status import status as status_lib

    settings, problems = lenient_settings()
    emit(status_lib(settings, problems, move_aside))


@command(cli, "stop")
@click.option("--env", help="Stop only this environment (test or prod).")
@_MOVE_ASIDE
def stop(env: str | None, move_aside: bool) -> None:
    """Stop the servers of this workdir (what state names and any of ours found running)."""
    from ..status import stop as stop_lib

    settings, problems = lenient_settings()
    emit(stop_lib(settings, env, problems, move_aside))


@command(cli, "monitor")
@click.option("--url", help="The model server's base URL [config monitor.url, default: the prod deployment].")
@click.option(
    "--prometheus",
    "prometheus_url",
    help="Prometheus base URL to read firing alerts from [config monitor.prometheus_url].",
)
@click.option("--job", help="With --prometheus: only the alerts of this job (service).")
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True, help="How many alerts to show.")
@click.option(
    "--window",
    "window_s",
    type=click.FloatRange(0.1, 3600),
    help="Without --prometheus: seconds between the two scrapes the figures come from [config monitor.window_s, default 10].",
)
def monitor(url: str | None, prometheus_url: str | None, job: str | None, top: int, window_s: float | None) -> None:
    """Print the live PSI per feature and the top alerts of a deployed model server."""
    from ..monitor import snapshot

    emit(
        snapshot(
            settings_from(
                **{"monitor.url": url, "monitor.prometheus_url": prometheus_url, "monitor.window_s": window_s}
            ),
            job=job,
            top=top,
        )
    )
