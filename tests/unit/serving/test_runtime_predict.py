"""Predictions through the whole chain: classification with labels, regression, the python
framework; the schema and health routes; draining."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from serving_bundles import IRIS_FEATURES, IRIS_LABELS, IRIS_ROWS, inputs, write_bundle

pytestmark = pytest.mark.anyio


async def test_classification_maps_classes_through_labels(iris, iris_model) -> None:
    r = await iris.client.post("/v1/predict", json={"instances": IRIS_ROWS})
    assert r.status_code == 200
    predictions = r.json()["predictions"]
    expected = iris_model.predict(np.array(IRIS_ROWS))
    proba = iris_model.predict_proba(np.array(IRIS_ROWS))
    assert [p["label"] for p in predictions] == [IRIS_LABELS[c] for c in expected]
    assert [p["label"] for p in predictions] == ["setosa", "virginica", "versicolor"]
    for p, row, cls in zip(predictions, proba, expected):
        assert set(p) == {"label", "probability"}
        assert p["probability"] == pytest.approx(row[cls])


async def test_list_rows_and_object_rows_give_identical_predictions(iris) -> None:
    as_lists = await iris.client.post("/v1/predict", json={"instances": IRIS_ROWS})
    # keys in another order than the schema: objects are matched by name, not position
    objects = [dict(reversed(list(zip(IRIS_FEATURES, row)))) for row in IRIS_ROWS]
    as_objects = await iris.client.post("/v1/predict", json={"instances": objects})
    mixed = await iris.client.post("/v1/predict", json={"instances": [objects[0], IRIS_ROWS[1], objects[2]]})
    assert as_lists.status_code == as_objects.status_code == mixed.status_code == 200
    assert as_lists.json() == as_objects.json() == mixed.json()


async def test_without_labels_the_label_is_the_class_as_declared_type(tmp_path: Path, iris_model, served) -> None:
    bundle = write_bundle(tmp_path, iris_model, outputs=[{"name": "label", "type": "integer"}])
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": IRIS_ROWS})
    assert r.json() == {"predictions": [{"label": 0}, {"label": 2}, {"label": 1}]}


async def test_regression_returns_the_prediction(tmp_path: Path, diabetes_model, served) -> None:
    model, names = diabetes_model
    from sklearn.datasets import load_diabetes

    rows = load_diabetes().data[:5].tolist()
    bundle = write_bundle(tmp_path, model, name="diabetes", task="regression", inputs_=inputs(names))
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": rows})
    assert r.status_code == 200
    got = [p["prediction"] for p in r.json()["predictions"]]
    assert got == pytest.approx(model.predict(np.array(rows)).tolist())
    assert all(set(p) == {"prediction"} for p in r.json()["predictions"])


PYTHON_MODEL = '''
import numpy as np

class Echo:
    """Regression: returns 10 * its first column plus the second; records the array's dtype."""
    def __init__(self):
        self.dtypes = []

    def predict(self, X):
        self.dtypes.append(X.dtype)
        return np.array([10 * float(r[0]) + float(r[1]) for r in X])
'''


async def test_python_framework_with_defaults_and_mixed_types(tmp_path: Path, served) -> None:
    schema_inputs = [
        {"name": "size", "type": "integer", "required": True, "default": None},
        {"name": "offset", "type": "number", "required": False, "default": 0.5},
        {"name": "colour", "type": "string", "required": False, "default": "red"},
    ]
    bundle = write_bundle(tmp_path, PYTHON_MODEL, class_name="Echo", task="regression", inputs_=schema_inputs)
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": [{"size": 2}, [3.0, 1.0, "blue"]]})
        model = s.app.state.pipeline.modules[1].estimator
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [{"prediction": 20.5}, {"prediction": 31.0}]}
    assert model.dtypes == [np.dtype(object)]  # a string input makes the array object-typed


CLASSIFIER = """
import numpy as np

class Threshold:
    classes_ = np.array(["small", "large"])

    def predict(self, X):
        return np.where(X[:, 0] > 5, "large", "small")

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-(X[:, 0] - 5)))
        return np.column_stack([1 - p, p])
"""


async def test_python_framework_classifier_with_classes_and_labels(tmp_path: Path, served) -> None:
    bundle = write_bundle(tmp_path, CLASSIFIER, class_name="Threshold", inputs_=inputs(["x"]), labels=["S", "L"])
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": [[5.0], [7.0], [3]]})
    predictions = r.json()["predictions"]
    assert [p["label"] for p in predictions] == ["S", "L", "S"]
    assert [p["probability"] for p in predictions] == pytest.approx([0.5, 1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-2))])


FAILING = """
class Broken:
    def predict(self, X):
        raise RuntimeError("weights\\nmissing")
"""


async def test_a_model_failing_at_predict_is_a_json_500(tmp_path: Path, served) -> None:
    bundle = write_bundle(tmp_path, FAILING, class_name="Broken", outputs=[{"name": "label", "type": "string"}])
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": [IRIS_ROWS[0]]})
        counted = s.registry.get_sample_value(
            "mlops_http_requests_total", {"route": "/v1/predict", "method": "POST", "status": "500"}
        )
        assert (await s.client.get("/health/ready")).status_code == 200  # still serving
    assert counted == 1
    assert r.status_code == 500
    assert r.json() == {
        "error": {"code": "prediction_failed", "message": "model failed to predict: RuntimeError: weights missing"}
    }


async def test_schema_route(iris) -> None:
    r = await iris.client.get("/v1/schema")
    body = r.json()
    assert (body["name"], body["version"], body["task"]) == ("iris", "1", "classification")
    assert [i["name"] for i in body["inputs"]] == IRIS_FEATURES
    assert body["inputs"][0] == {"name": "sepal_length_cm", "type": "number", "required": True, "default": None}
    assert body["outputs"] == [{"name": "label", "type": "string"}, {"name": "probability", "type": "number"}]


async def test_health_routes_and_draining(iris) -> None:
    live = await iris.client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    ready = await iris.client.get("/health/ready")
    sha = iris.app.state.pipeline.modules[1].ctx.spec.model.sha256
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "name": "iris", "version": "1", "sha256": sha, "pid": os.getpid()}
    assert "connection" not in ready.headers

    iris.app.state.serving.start_draining()
    draining = await iris.client.get("/health/ready")
    assert draining.status_code == 503 and draining.json()["error"]["code"] == "draining"
    assert draining.headers["connection"] == "close"
    # requests still succeed while draining, but tell the client to reconnect
    r = await iris.client.post("/v1/predict", json={"instances": IRIS_ROWS})
    assert r.status_code == 200 and r.headers["connection"] == "close"
    assert (await iris.client.get("/health/live")).headers["connection"] == "close"


async def test_nothing_is_served_before_the_lifespan_has_loaded_the_model(iris_bundle: Path) -> None:
    import httpx
    from prometheus_client import CollectorRegistry

    from serving.app import create_app
    from serving.spec import load_spec

    app = create_app(load_spec(iris_bundle), iris_bundle, CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        ready = await client.get("/health/ready")
        predict = await client.post("/v1/predict", json={"instances": IRIS_ROWS})
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert predict.status_code == 503 and predict.json()["error"]["code"] == "not_ready"
