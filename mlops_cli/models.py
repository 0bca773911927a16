"""`mlops model list|show`: what the local store holds, and any source's metadata for a reference."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .interface_check import schema_of
from .settings import Settings
from .sources import get_source, parse_ref
from .sources.local import LocalStore


class ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())
    ref: str
    framework: str
    created_at: str
    tags: list[str]
    metrics: dict[str, float]


class ModelList(BaseModel):
    model_config = ConfigDict(frozen=True)
    store: str
    models: list[ModelEntry]

    def lines(self) -> list[str]:
        if not self.models:
            return [
                f"no models in the local store {self.store}; register one with "
                "`mlops model register FILE --name NAME --tag validated --metrics accuracy=0.97`"
            ]
        out = [f"{'REFERENCE':28} {'FRAMEWORK':9} {'CREATED':20} TAGS / METRICS"]
        for m in self.models:
            extra = ", ".join(m.tags + [f"{k}={v:g}" for k, v in m.metrics.items()])
            out.append(f"{m.ref:28} {m.framework:9} {m.created_at[:19]:20} {extra}")
        return out


class ModelShow(BaseModel):
    model_config = ConfigDict(frozen=True)
    ref: str
    metadata: dict[str, Any]

    def lines(self) -> list[str]:
        md = self.metadata
        out = [
            f"{self.ref}: {md['framework']} {md['task']} model, artifact {md['artifact_name']} "
            f"(sha256:{md['sha256'][:12]}, {md.get('size', 0)} bytes), created {md.get('created_at') or '?'}"
        ]
        out.append("  tags: " + (", ".join(md.get("tags") or []) or "none"))
        out.append("  metrics: " + (", ".join(f"{k}={v:g}" for k, v in (md.get("metrics") or {}).items()) or "none"))
        schema = schema_of(md["schema"], f"{self.ref}'s schema") if md.get("schema") else None
        if schema is not None:
            out.append("  inputs: " + ", ".join(f"{f.name}:{f.type}" for f in schema.inputs))
            out.append("  outputs: " + ", ".join(f"{f.name}:{f.type}" for f in schema.outputs))
        else:
            out.append("  schema: none (inputs are not checked)")
        if md.get("labels"):
            out.append("  labels: " + ", ".join(map(str, md["labels"])))
        out.append(
            f"  examples: {len(md.get('examples') or [])}; reference data: "
            + ("yes" if md.get("reference") else "none (no drift detection)")
        )
        return out


def list_models(settings: Settings) -> ModelList:
    """Every version of every model in the local store, oldest version first."""
    store = LocalStore(settings.store_path)
    entries = []
    for name in store.names():
        for version in store.versions(name):
            meta = store.metadata(parse_ref(f"local:{name}@{version}"))
            entries.append(
                ModelEntry(
                    ref=f"local:{name}@{version}",
                    framework=meta.framework,
                    created_at=meta.created_at,
                    tags=list(meta.tags),
                    metrics=dict(meta.metrics),
                )
            )
    return ModelList(store=str(store.root), models=entries)


def show_model(settings: Settings, reference: str | None) -> ModelShow:
    """The metadata a source holds for a reference (local:, clearml:, s3://); default: settings.model."""
    from .errors import UsageError

    text = reference or settings.model
    if not text:
        raise UsageError(
            "no model reference given",
            hint="mlops model show local:NAME[@VERSION] "
            "(or clearml:MODEL_ID, s3://BUCKET/PREFIX); `mlops model list` shows the local store",
        )
    ref = parse_ref(text)
    meta = get_source(ref.scheme, settings).fetch_metadata(ref)
    shown = ref.pinned(meta.version)
    return ModelShow(ref=str(shown), metadata=meta.model_dump(mode="json", by_alias=True))
