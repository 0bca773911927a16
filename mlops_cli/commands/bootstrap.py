"""Getting started: demo (a model through the whole pipeline) and base-image (a Python base image)."""

from __future__ import annotations

import click

from ..cli import cli, command, emit, settings_from


@command(cli, "base-image")
@click.option("--name", default="localhost/mlops-python-base:bookworm", show_default=True, help="Image name to commit.")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite for debootstrap.")
@click.option("--mirror", help="Debian mirror URL for debootstrap [default: debootstrap's].")
def base_image(name: str, suite: str, mirror: str | None) -> None:
    """Make a Python base image from Debian packages with debootstrap and buildah (no Docker Hub)."""
    from ..baseimage import build_base_image

    emit(build_base_image(settings_from(), name=name, suite=suite, mirror=mirror))


@command(cli, "demo")
@click.option(
    "--port",
    type=click.IntRange(1, 65534),
    help="Serve prod on PORT and test on PORT+1 [config deploy.prod.port / deploy.test.port, default 8701 / 8700].",
)
def demo(port: int | None) -> None:
    """Train a small iris model, register it and run the whole pipeline; leaves the test and prod
    servers running (stop them with `mlops stop --workdir WORKDIR`). Reads every section the
    pipeline reads; thresholds default to accuracy and f1_macro >= 0.9."""
    from .. import demo as demo_lib
    from ..run_all import raise_if_failed

    result = demo_lib.run(settings_from(**{"deploy.prod.port": port, "deploy.test.port": port and port + 1}))
    emit(result)
    raise_if_failed(result.pipeline)
