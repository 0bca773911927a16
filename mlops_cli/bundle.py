"""What a bundle holds besides the runtime: spec.json (a serving.spec.Spec), the model, its module files,
examples.json and reference.json. assemble-server writes them into the bundle; validate-model writes the
same into a scratch directory and has the server's own code load and run them (mlops_cli.trial)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serving.spec import SPEC_VERSION, ModelSpec, ModuleSpec, ServerSpec, Spec, write_spec

from .digests import sha256_file
from .errors import ConfigError, StageFailed
from .module_files import fetch_verified, mismatches, spec_modules
from .settings import Settings
from .sources.metadata import ModelMetadata

MODEL_DIR = "model"


def _monitorable(meta: ModelMetadata) -> bool:
    """Outlier and drift monitoring need reference statistics of at least one numeric input."""
    stats = (meta.reference or {}).get("features", {})
    return any(
        f.type in ("number", "integer") and "quantiles" in stats.get(f.name, {})
        for f in (meta.schema_.inputs if meta.schema_ else ())
    )


def build_spec(meta: ModelMetadata, settings: Settings) -> Spec:
    """The server spec (docs/bundle.md): which modules run, in what order, with what settings.

    Built as the server's own type, so whatever the server would refuse in it is refused here, in one line."""
    if meta.schema_ is None:
        raise StageFailed(
            f"model {meta.name}@{meta.version} has no input/output schema in its metadata",
            hint="register it with --schema FILE",
        )
    try:
        return Spec(
            spec_version=SPEC_VERSION,
            model=ModelSpec(
                name=meta.name,
                version=meta.version,
                framework=meta.framework,
                task=meta.task,
                artifact=f"{MODEL_DIR}/{meta.artifact_name}",
                sha256=meta.sha256,
                class_name=meta.class_name,
            ),
            io=meta.schema_,
            modules=[
                ModuleSpec(name=m["name"], settings=m["settings"])
                for m in spec_modules(meta, _monitorable(meta), meta.labels)
            ],
            server=server_spec(settings),
        )
    except ValidationError as exc:  # a value the server would refuse
        raise StageFailed(f"model {meta.name}@{meta.version} cannot be served: {one_error(exc)}") from None


def server_spec(settings: Settings) -> ServerSpec:
    """spec.json's `server`: max_body_bytes, drain_seconds and assemble.server_limits, checked by the runtime's rules."""
    section: dict[str, Any] = {
        "max_body_bytes": settings.assemble.max_body_bytes,
        "drain_seconds": settings.assemble.drain_seconds,
    }
    for key, value in settings.assemble.server_limits.items():
        field = ServerSpec.model_fields.get(key)
        section[key] = (
            int(value) if field is not None and field.annotation is int and float(value).is_integer() else value
        )
    try:
        return ServerSpec.model_validate(section)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'server'}: "
            f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"assemble.server_limits: {problems}", hint="see docs/bundle.md, 'Limits'") from None


def one_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def fetch_model(source: Any, meta: ModelMetadata, dest: Path) -> tuple[Path, str]:
    """The artifact at dest/model/<name>, as the bundle holds it, and its actual sha256."""
    artifact = source.fetch_artifact(meta, dest / MODEL_DIR)
    return artifact, sha256_file(artifact)


def fetch_modules(source: Any, meta: ModelMetadata, dest: Path) -> list[str]:
    """The model's module files where the bundle holds them; the digest mismatches, in words."""
    return mismatches(fetch_verified(source, meta, dest))


def write_contents(meta: ModelMetadata, settings: Settings, dest: Path) -> Spec:
    """spec.json, examples.json and reference.json into dest (the model and module files are fetched apart)."""
    spec = build_spec(meta, settings)
    write_spec(spec, dest)
    (dest / "examples.json").write_text(json.dumps(meta.examples, indent=2) + "\n")
    (dest / "reference.json").write_text(json.dumps(meta.reference, indent=2) + "\n")
    return spec
