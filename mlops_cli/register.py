"""`mlops model register`: put a model file and its metadata into the local store."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import UsageError
from .settings import Settings
from .sources.local import LocalStore
from .sources.metadata import ModelMetadata

QUANTILES = [i / 10 for i in range(11)]


@dataclass(frozen=True)
class RegisterRequest:
    artifact: Path
    name: str
    framework: str | None = None
    task: str = "classification"
    metrics: dict[str, float] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    schema_file: Path | None = None
    examples_file: Path | None = None
    reference_file: Path | None = None
    labels: list[str] | None = None
    class_name: str | None = None
    modules_file: Path | None = None


def _load_modules(path: Path) -> dict[str, Any]:
    """The modules description (README: extra modules); each `file` relative to the description's folder."""
    data = _load_structured(path, "modules")
    if not isinstance(data, dict):
        raise UsageError(f"modules file {path} must be a mapping (preprocessing, outlier_detector, user_modules)")

    def resolved(entry: Any) -> Any:
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            return {**entry, "file": str(path.parent / entry["file"])}
        return entry

    if data.get("outlier_detector") is not None:
        data["outlier_detector"] = resolved(data["outlier_detector"])
    if isinstance(data.get("user_modules"), list):
        data["user_modules"] = [resolved(m) for m in data["user_modules"]]
    return data


def _load_structured(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"{what} file {path} is not UTF-8 text") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UsageError(
            f"{what} file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def normalize_examples(data: Any) -> list[dict[str, Any]]:
    """Examples as request bodies: accepts one body, a list of bodies, or a list of instances."""
    if isinstance(data, dict) and "instances" in data:
        data = [data]
    if not isinstance(data, list) or not data:
        raise UsageError('examples must be a request body {"instances": [...]} or a non-empty list')
    bodies = []
    for item in data:
        body = item if isinstance(item, dict) and "instances" in item else {"instances": [item]}
        if not isinstance(body["instances"], list) or not body["instances"]:
            raise UsageError("each example must have a non-empty 'instances' list")
        bodies.append(body)
    return bodies


def reference_stats(columns: dict[str, list[float]]) -> dict[str, Any]:
    """Per-feature count, mean, std, min, max and deciles of the training data."""
    features = {}
    rows = 0
    for name, values in columns.items():
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        rows = max(rows, int(arr.size))
        if arr.size == 0:
            continue
        features[name] = {
            "count": int(arr.size),
            "mean": float(arr.mean()),
            "std": float(arr.std()),
            "min": float(arr.min()),
            "max": float(arr.max()),
            "quantiles": [float(q) for q in np.quantile(arr, QUANTILES)],
        }
    return {"rows": rows, "quantile_levels": QUANTILES, "features": features}


def _reference_from_csv(path: Path) -> dict[str, Any]:
    """Statistics of a training-data CSV with a header row; non-numeric cells count as missing."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise UsageError(f"reference file {path} has no header row")
            columns: dict[str, list[float]] = {name: [] for name in header}
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise UsageError(f"reference file {path}, line {line}: {len(row)} cells, header has {len(header)}")
                for name, raw in zip(header, row):
                    try:
                        columns[name].append(float(raw))
                    except ValueError:
                        columns[name].append(math.nan)
    except OSError as exc:
        raise UsageError(f"cannot read reference file {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"reference file {path} is not a readable CSV: {exc}") from None
    return reference_stats(columns)


def register(settings: Settings, req: RegisterRequest) -> ModelMetadata:
    schema = _load_structured(req.schema_file, "schema") if req.schema_file else None
    examples = normalize_examples(_load_structured(req.examples_file, "examples")) if req.examples_file else []
    reference = None
    if req.reference_file:
        if req.reference_file.suffix == ".csv":
            reference = _reference_from_csv(req.reference_file)
        else:
            reference = _load_structured(req.reference_file, "reference")
    return LocalStore(settings.store_path).register(
        req.artifact,
        name=req.name,
        framework=req.framework,
        task=req.task,
        metrics=req.metrics,
        tags=req.tags,
        schema=schema,
        examples=examples,
        reference=reference,
        labels=req.labels,
        class_name=req.class_name,
        modules=_load_modules(req.modules_file) if req.modules_file else None,
    )
