"""The benchmark's model and bundles: StandardScaler+LogisticRegression on breast_cancer (30 features).

``write_bundles(dir)`` trains the model, writes its joblib artifact, a ``reference.json`` from
the training data (the format ``mlops assemble-server`` writes) and two bundles sharing them:
``full`` (preprocessing, outlier, drift, model, postprocessing) and ``model-only``
(preprocessing, model, postprocessing), so the cost of outlier + drift can be read off.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

LABELS = ["malignant", "benign"]
LEVELS = [i / 10 for i in range(11)]


def train() -> tuple[Any, list[str], Any]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(data.data, data.target)
    return model, names, data.data


def reference(names: list[str], rows: Any) -> dict[str, Any]:
    import numpy as np

    features = {}
    for i, name in enumerate(names):
        col = rows[:, i]
        features[name] = {
            "count": int(col.size),
            "mean": float(col.mean()),
            "std": float(col.std()),
            "min": float(col.min()),
            "max": float(col.max()),
            "quantiles": [float(q) for q in np.quantile(col, LEVELS)],
        }
    return {"rows": int(rows.shape[0]), "quantile_levels": LEVELS, "features": features}


def _spec(names: list[str], sha256: str, modules: list[str]) -> dict[str, Any]:
    settings = {"postprocessing": {"labels": LABELS}, "model": {"label_from_proba": True}}
    return {
        "spec_version": 1,
        "model": {
            "name": "breast-cancer",
            "version": "1",
            "framework": "sklearn",
            "task": "classification",
            "artifact": "model/model.joblib",
            "sha256": sha256,
            "class_name": None,
        },
        "schema": {
            "inputs": [{"name": n, "type": "number", "required": True, "default": None} for n in names],
            "outputs": [{"name": "label", "type": "string"}, {"name": "probability", "type": "number"}],
        },
        "modules": [{"name": m, "settings": settings.get(m, {})} for m in modules],
        "server": {"max_body_bytes": 1048576, "drain_seconds": 0.5},
    }


FULL = ["preprocessing", "outlier", "drift", "model", "postprocessing"]
MODEL_ONLY = ["preprocessing", "model", "postprocessing"]


def write_bundles(directory: Path) -> dict[str, Any]:
    """Writes ``full/`` and ``model-only/`` bundles; returns paths, names and a sample row."""
    import joblib

    model, names, rows = train()
    out: dict[str, Any] = {"names": names, "row": [float(v) for v in rows[0]], "labels": LABELS}
    for kind, modules in (("full", FULL), ("model-only", MODEL_ONLY)):
        bundle = Path(directory) / kind
        (bundle / "model").mkdir(parents=True)
        joblib.dump(model, bundle / "model" / "model.joblib")
        sha256 = hashlib.sha256((bundle / "model" / "model.joblib").read_bytes()).hexdigest()
        (bundle / "spec.json").write_text(json.dumps(_spec(names, sha256, modules), indent=2))
        (bundle / "reference.json").write_text(json.dumps(reference(names, rows)))
        out[kind] = bundle
    out["artifact"] = out["full"] / "model" / "model.joblib"
    return out


def clean(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
