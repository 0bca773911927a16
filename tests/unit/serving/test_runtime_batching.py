"""Micro-batching: concurrent requests share one pass through the chain, each caller gets
exactly its own rows back in order, one bad request never fails the others, and a full queue
sheds load with 503 + Retry-After."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from serving_bundles import IRIS_LABELS, inputs, write_bundle

pytestmark = pytest.mark.anyio


def _batches(registry) -> tuple[float, float]:
    """(number of batches, requests they held)."""
    return (
        registry.get_sample_value("mlops_batch_size_requests_count"),
        registry.get_sample_value("mlops_batch_size_requests_sum"),
    )


async def test_concurrent_requests_are_coalesced_and_each_gets_its_own_rows(iris, iris_model) -> None:
    rng = np.random.default_rng(7)
    bodies = [
        rng.uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], size=(n, 4)).round(2).tolist()
        for n in (1, 3, 2, 5, 1, 4, 2, 1, 3, 6)
    ]
    answers = await asyncio.gather(*(iris.client.post("/v1/predict", json={"instances": rows}) for rows in bodies))
    for rows, r in zip(bodies, answers):
        assert r.status_code == 200, r.text
        expected = [IRIS_LABELS[c] for c in iris_model.predict(np.array(rows))]
        assert [p["label"] for p in r.json()["predictions"]] == expected
        proba = iris_model.predict_proba(np.array(rows)).max(axis=1)
        assert [p["probability"] for p in r.json()["predictions"]] == pytest.approx(proba.tolist())
    batches, requests = _batches(iris.registry)
    assert requests == len(bodies)
    assert batches < len(bodies)  # some requests shared a batch
    assert iris.registry.get_sample_value("mlops_batch_size_rows_sum") == sum(len(b) for b in bodies)


async def test_a_bad_request_in_a_batch_fails_alone(iris, iris_model) -> None:
    good = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    bodies = [{"instances": good}, {"instances": [[5.1, "x", 1.4, 0.2]]}, {"instances": []}, {"instances": good[::-1]}]
    answers = await asyncio.gather(*(iris.client.post("/v1/predict", json=b) for b in bodies))
    assert [r.status_code for r in answers] == [200, 422, 400, 200]
    assert [p["label"] for p in answers[0].json()["predictions"]] == ["setosa", "virginica"]
    assert [p["label"] for p in answers[3].json()["predictions"]] == ["virginica", "setosa"]
    assert "instance 0, feature 'sepal_width_cm'" in answers[1].json()["error"]["message"]
    assert _batches(iris.registry)[0] < len(bodies)


PICKY = '''
import numpy as np

class Picky:
    """Regression: refuses any row whose first value is 13."""
    def predict(self, X):
        if (X[:, 0] == 13).any():
            raise ValueError("13 is unlucky")
        return X[:, 0] * 2
'''


async def test_a_model_failing_on_one_request_fails_only_that_request(tmp_path: Path, served) -> None:
    bundle = write_bundle(tmp_path, PICKY, class_name="Picky", task="regression", inputs_=inputs(["x"]))
    async with served(bundle) as s:
        bodies = [[[1.0], [2.0]], [[13.0]], [[3.0]], [[4.0], [13.0]], [[5.0]]]
        answers = await asyncio.gather(*(s.client.post("/v1/predict", json={"instances": b}) for b in bodies))
        batches, _ = _batches(s.registry)
    assert [r.status_code for r in answers] == [200, 500, 200, 500, 200]
    assert answers[0].json() == {"predictions": [{"prediction": 2.0}, {"prediction": 4.0}]}
    assert answers[2].json() == {"predictions": [{"prediction": 6.0}]}
    assert answers[4].json() == {"predictions": [{"prediction": 10.0}]}
    assert answers[1].json()["error"] == {
        "code": "prediction_failed",
        "message": "model failed to predict: ValueError: 13 is unlucky",
    }
    assert batches < len(bodies)


async def test_a_full_queue_sheds_load_with_503_and_retry_after(tmp_path: Path, iris_model, served) -> None:
    bundle = write_bundle(tmp_path, iris_model, labels=IRIS_LABELS, server={"max_queue": 2})
    async with served(bundle) as s:
        answers = await asyncio.gather(
            *(s.client.post("/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}) for _ in range(12))
        )
        shed = [r for r in answers if r.status_code == 503]
        assert shed and len(shed) < len(answers)
        assert all(r.status_code == 200 for r in answers if r not in shed)
        for r in shed:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "overloaded"
        assert s.registry.get_sample_value("mlops_batch_queue_rejected_total") == len(shed)
        assert s.registry.get_sample_value(
            "mlops_http_requests_total", {"route": "/v1/predict", "method": "POST", "status": "503"}
        ) == len(shed)
        again = await s.client.post("/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert again.status_code == 200  # the server keeps serving


async def test_batching_limits_come_from_the_spec(tmp_path: Path, iris_model, served) -> None:
    bundle = write_bundle(tmp_path, iris_model, labels=IRIS_LABELS, server={"max_batch_requests": 2})
    async with served(bundle) as s:
        answers = await asyncio.gather(
            *(s.client.post("/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}) for _ in range(6))
        )
        assert all(r.status_code == 200 for r in answers)
        assert s.registry.get_sample_value(
            "mlops_batch_size_requests_bucket", {"le": "2.0"}
        ) == s.registry.get_sample_value("mlops_batch_size_requests_count")


EXPLODING = '''
import numpy as np

class Exploding:
    """Regression whose output overflows to infinity for inputs over 100."""
    def predict(self, X):
        return np.where(X[:, 0] > 100, np.inf, X[:, 0])
'''


async def test_a_non_finite_output_is_a_422_for_that_request_only(tmp_path: Path, served) -> None:
    bundle = write_bundle(tmp_path, EXPLODING, class_name="Exploding", task="regression", inputs_=inputs(["x"]))
    async with served(bundle) as s:
        answers = await asyncio.gather(
            *(s.client.post("/v1/predict", json={"instances": b}) for b in ([[1.0]], [[2.0], [1e300]], [[3.0]]))
        )
    assert [r.status_code for r in answers] == [200, 422, 200]
    assert answers[1].json()["error"] == {
        "code": "non_finite_output",
        "message": "instance 1: the model's output is not finite for these values (outside the range it can score)",
    }
    assert answers[2].json() == {"predictions": [{"prediction": 3.0}]}
