"""Reference statistics of the training data, as ``mlops assemble-server`` writes them in the
bundle's ``reference.json``: ``{"rows", "quantile_levels", "features": {name: {"count", "mean",
"std", "min", "max", "quantiles"}}}``, or ``null`` when the model was registered without them.
The outlier and drift modules read it at startup; both refuse to start without it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from serving.errors import BundleError

REFERENCE_FILE = "reference.json"


@dataclass(frozen=True)
class FeatureReference:
    count: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: tuple[float, ...]


@dataclass(frozen=True)
class Reference:
    levels: tuple[float, ...]
    features: dict[str, FeatureReference]


def check_relative(value: str) -> str:
    """A settings validator: a relative path inside the bundle."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError("must be a relative path inside the bundle")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BundleError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _feature(name: str, data: Any, levels: int, source: str) -> FeatureReference:
    where = f"{source}: features.{name}"
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected an object")
    missing = [k for k in ("count", "mean", "std", "min", "max", "quantiles") if k not in data]
    if missing:
        raise BundleError(f"{where}: missing {', '.join(missing)}")
    quantiles = data["quantiles"]
    if not isinstance(quantiles, list) or len(quantiles) != levels:
        raise BundleError(f"{where}.quantiles: expected {levels} values, one per quantile level")
    values = tuple(_number(q, f"{where}.quantiles") for q in quantiles)
    if list(values) != sorted(values):
        raise BundleError(f"{where}.quantiles: must not decrease")
    return FeatureReference(
        int(_number(data["count"], f"{where}.count")),
        _number(data["mean"], f"{where}.mean"),
        _number(data["std"], f"{where}.std"),
        _number(data["min"], f"{where}.min"),
        _number(data["max"], f"{where}.max"),
        values,
    )


def load_reference(bundle_dir: Path, relative: str, module: str) -> Reference:
    """The reference statistics; BundleError (one line) when missing, null or malformed."""
    path = Path(bundle_dir) / relative
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{module}: cannot read {relative}: {exc}") from None
    if data is None:
        raise BundleError(
            f"{module}: the bundle has no reference statistics ({relative} is missing or null); "
            f"register the model with reference data or remove the {module} module"
        )
    if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
        raise BundleError(f"{relative}: expected an object with 'quantile_levels' and 'features'")
    levels = data.get("quantile_levels")
    if (
        not isinstance(levels, list)
        or len(levels) < 2
        or levels[0] != 0
        or levels[-1] != 1
        or levels != sorted(set(levels))
    ):
        raise BundleError(f"{relative}: quantile_levels must increase from 0 to 1")
    levels_t = tuple(_number(v, f"{relative}: quantile_levels") for v in levels)
    features = {name: _feature(name, value, len(levels), relative) for name, value in data["features"].items()}
    return Reference(levels_t, features)


def numeric_columns(ctx: Any, reference: Reference, wanted: list[str] | None, module: str) -> list[tuple[int, str]]:
    """(column, name) of the inputs the module watches: ``wanted``, or every numeric input that
    has reference statistics; BundleError when a wanted feature cannot be watched or none can."""
    inputs = ctx.spec.io.inputs
    position = {f.name: i for i, f in enumerate(inputs)}
    numeric = {f.name for f in inputs if f.type in ("number", "integer")}
    if wanted is None:
        chosen = [(position[f.name], f.name) for f in inputs if f.name in numeric and f.name in reference.features]
        if not chosen:
            raise BundleError(f"{module}: no numeric input has reference statistics")
        return chosen
    for name in wanted:
        if name not in numeric:
            raise BundleError(f"{module}.features: {name!r} is not a number/integer input")
        if name not in reference.features:
            raise BundleError(f"{module}.features: {name!r} has no reference statistics")
    return [(position[name], name) for name in wanted]
