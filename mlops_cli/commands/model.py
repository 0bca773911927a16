"""`mlops model`: the local model store (register, list) and any source's metadata (show)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..cli import _OPTIONS, cli, command, emit, settings_from


@cli.group()
def model() -> None:
    """Manage models in the local store."""


def _metric(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    metrics = {}
    for item in values:
        key, sep, raw = item.partition("=")
        try:
            metrics[key.strip()] = float(raw)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not NAME=NUMBER") from None
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not NAME=NUMBER")
    return metrics


@command(model, "register")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name.")
@click.option("--framework", type=click.Choice(["sklearn", "onnx", "python"]), help="Default: from the file's suffix.")
@click.option(
    "--task",
    type=click.Choice(["classification", "regression"]),
    default="classification",
    show_default=True,
    help="What the model predicts: a class or a number.",
)
@click.option(
    "--metrics", "metrics", multiple=True, callback=_metric, metavar="NAME=VALUE", help="A metric (repeatable)."
)
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON/YAML with inputs and outputs.",
)
@click.option(
    "--examples", "examples_file", type=click.Path(dir_okay=False, path_type=Path), help="JSON/YAML example requests."
)
@click.option(
    "--reference",
    "reference_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training data CSV, or JSON statistics.",
)
@click.option("--labels", help="Class labels in the model's class order, comma-separated.")
@click.option("--class-name", help="For --framework python: the model class in the file.")
@click.option(
    "--modules",
    "modules_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON/YAML: preprocessing settings, outlier_detector, user_modules (files relative to it).",
)
def model_register(file: Path, **kwargs: Any) -> None:
    """Store FILE content-addressed by sha256, with its metadata, as the next version of --name."""
    from ..register import RegisterRequest, register

    labels = kwargs.pop("labels")
    req = RegisterRequest(
        artifact=file,
        labels=[s.strip() for s in labels.split(",")] if labels else None,
        tags=list(kwargs.pop("tags")),
        **kwargs,
    )
    meta = register(settings_from(), req)
    if _OPTIONS["json"]:
        click.echo(meta.model_dump_json(by_alias=True, indent=2))
    else:
        click.echo(f"registered local:{meta.name}@{meta.version} (sha256:{meta.sha256[:12]})")


@command(model, "list")
def model_list() -> None:
    """List every version in the local store [config store.path, default WORKDIR/store]."""
    from ..models import list_models

    emit(list_models(settings_from()))


@command(model, "show")
@click.argument("reference", required=False)
def model_show(reference: str | None) -> None:
    """Show a model's metadata from its source: REFERENCE is local:NAME[@VERSION], clearml:MODEL_ID or
    s3://BUCKET/PREFIX [default: config model / MLOPS_MODEL]; reads the store, clearml and s3 sections."""
    from ..models import show_model

    emit(show_model(settings_from(), reference))
