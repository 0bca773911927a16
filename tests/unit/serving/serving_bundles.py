"""Builds server bundles for the serving tests: a trained model, its artifact and spec.json.

A bundle here is what ``python -m serving`` needs (docs/bundle.md) minus the copy of
``serving`` itself: the tests put the repository root on the path instead. Imported by the
unit tests directly and by tests/integration/serving/conftest.py by path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

IRIS_FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
IRIS_LABELS = ["setosa", "versicolor", "virginica"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
CLASSIFICATION_OUTPUTS = [{"name": "label", "type": "string"}, {"name": "probability", "type": "number"}]
REGRESSION_OUTPUTS = [{"name": "prediction", "type": "number"}]


def train_iris() -> Any:
    """Logistic regression on sklearn's bundled iris data (no download)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(features, target)


def train_diabetes() -> tuple[Any, list[str]]:
    """Linear regression on sklearn's bundled diabetes data, and its feature names."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    data = load_diabetes()
    return LinearRegression().fit(data.data, data.target), [f"{n}_scaled" for n in data.feature_names]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def inputs(names: list[str], type: str = "number") -> list[dict[str, Any]]:
    return [{"name": n, "type": type, "required": True, "default": None} for n in names]


def make_spec(
    sha256: str,
    *,
    name: str = "iris",
    version: str = "1",
    framework: str = "sklearn",
    task: str = "classification",
    artifact: str = "model/model.joblib",
    class_name: str | None = None,
    inputs_: list[dict] | None = None,
    outputs: list[dict] | None = None,
    labels: list[Any] | None = None,
    max_body_bytes: int = 1_048_576,
    drain_seconds: float = 1.0,
    modules: list[str] | None = None,
    settings: dict[str, dict] | None = None,
    server: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A spec.json document; the defaults describe the iris classifier. ``modules`` names the
    chain (default: preprocessing, model, postprocessing); ``settings`` maps module -> settings."""
    settings = dict(settings or {})
    if labels:
        settings.setdefault("postprocessing", {"labels": labels})
    if outputs is None:
        outputs = CLASSIFICATION_OUTPUTS if task == "classification" else REGRESSION_OUTPUTS
    return {
        "spec_version": 1,
        "model": {
            "name": name,
            "version": version,
            "framework": framework,
            "task": task,
            "artifact": artifact,
            "sha256": sha256,
            "class_name": class_name,
        },
        "schema": {"inputs": inputs_ if inputs_ is not None else inputs(IRIS_FEATURES), "outputs": outputs},
        "modules": [
            {"name": m, "settings": settings.get(m, {})}
            for m in modules or ["preprocessing", "model", "postprocessing"]
        ],
        "server": {"max_body_bytes": max_body_bytes, "drain_seconds": drain_seconds, **(server or {})},
    }


LEVELS = [i / 10 for i in range(11)]


def reference_stats(columns: dict[str, Any]) -> dict[str, Any]:
    """reference.json as ``mlops assemble-server`` writes it, from training columns."""
    import numpy as np

    features = {}
    for name, values in columns.items():
        col = np.asarray(values, dtype=float)
        features[name] = {
            "count": int(col.size),
            "mean": float(col.mean()),
            "std": float(col.std()),
            "min": float(col.min()),
            "max": float(col.max()),
            "quantiles": [float(q) for q in np.quantile(col, LEVELS)],
        }
    return {"rows": max(len(v) for v in columns.values()), "quantile_levels": LEVELS, "features": features}


def iris_reference() -> dict[str, Any]:
    from sklearn.datasets import load_iris

    data = load_iris().data
    return reference_stats({name: data[:, i] for i, name in enumerate(IRIS_FEATURES)})


def write_bundle(directory: Path, model: Any, *, reference: Any = "absent", **spec: Any) -> Path:
    """Write ``model`` (an estimator, dumped with joblib, Python source text for the ``python``
    framework, or ONNX bytes for ``onnx``) and a matching spec.json into ``directory``; returns it.
    ``reference``: the content of reference.json (None writes ``null``; default: no file)."""
    import joblib

    directory = Path(directory)
    if reference != "absent":
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "reference.json").write_text(json.dumps(reference))
    (directory / "model").mkdir(parents=True, exist_ok=True)
    if isinstance(model, bytes):  # a serialized ONNX graph
        spec.setdefault("framework", "onnx")
        spec.setdefault("artifact", "model/model.onnx")
        (directory / spec["artifact"]).write_bytes(model)
    elif isinstance(model, str):
        spec.setdefault("framework", "python")
        spec.setdefault("artifact", "model/model.py")
        (directory / spec["artifact"]).write_text(model)
    else:
        spec.setdefault("artifact", "model/model.joblib")
        joblib.dump(model, directory / spec["artifact"])
    document = make_spec(sha256_file(directory / spec["artifact"]), **spec)
    (directory / "spec.json").write_text(json.dumps(document, indent=2) + "\n")
    return directory


def edit_spec(directory: Path, change: Any) -> None:
    """Apply ``change(document)`` to the bundle's spec.json in place."""
    path = Path(directory) / "spec.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
