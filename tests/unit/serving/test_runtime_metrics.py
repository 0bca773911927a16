"""/metrics: the documented metric names, bounded labels, a parseable exposition, and one
fresh registry per app (never the global one)."""

from __future__ import annotations

from pathlib import Path

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from serving_bundles import IRIS_ROWS

from serving.app import create_app
from serving.metrics import METRIC_NAMES
from serving.spec import load_spec

pytestmark = pytest.mark.anyio


async def _scrape(client) -> tuple[dict[str, list], str]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples, r.headers["content-type"]


def _value(samples: dict[str, list], name: str, **labels: str) -> float:
    matching = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, f"{name}{labels}: {matching}"
    return matching[0]


async def test_metrics_after_requests(iris) -> None:
    await iris.client.post("/v1/predict", json={"instances": IRIS_ROWS})  # setosa, virginica, versicolor
    await iris.client.post("/v1/predict", json={"instances": [IRIS_ROWS[0], IRIS_ROWS[0]]})
    await iris.client.post("/v1/predict", json={"instances": []})
    await iris.client.get("/no/such/path/12345")
    samples, content_type = await _scrape(iris.client)

    assert content_type.startswith("text/plain; version=0.0.4")
    for name in METRIC_NAMES:
        assert any(s.startswith(name) for s in samples), name
    assert _value(samples, "mlops_http_requests_total", route="/v1/predict", method="POST", status="200") == 2
    assert _value(samples, "mlops_http_requests_total", route="/v1/predict", method="POST", status="400") == 1
    assert _value(samples, "mlops_http_requests_total", route="other", method="GET", status="404") == 1
    assert not any("/no/such" in str(s.labels) for values in samples.values() for s in values)
    assert _value(samples, "mlops_http_request_duration_seconds_count", route="/v1/predict", method="POST") == 3
    assert _value(samples, "mlops_http_requests_in_flight") == 1  # the scrape itself
    assert _value(samples, "mlops_predictions_total", label="setosa") == 3
    assert _value(samples, "mlops_predictions_total", label="virginica") == 1
    assert _value(samples, "mlops_predictions_total", label="versicolor") == 1
    for module in ("preprocessing", "model", "postprocessing"):
        count = _value(samples, "mlops_module_duration_seconds_count", module=module)
        assert count == (3 if module == "preprocessing" else 2)  # the empty batch stopped in preprocessing
    info = [s for s in samples["mlops_model_info"]]
    assert len(info) == 1 and info[0].value == 1 and info[0].labels["framework"] == "sklearn"


async def test_unknown_methods_are_bounded_too(iris) -> None:
    await iris.client.request("BREW", "/v1/predict")
    samples, _ = await _scrape(iris.client)
    assert _value(samples, "mlops_http_requests_total", route="/v1/predict", method="other", status="405") == 1


async def test_two_apps_in_one_process_use_their_own_registries(iris_bundle: Path, served) -> None:
    async with served(iris_bundle) as first, served(iris_bundle) as second:
        await first.client.post("/v1/predict", json={"instances": IRIS_ROWS})
        first_samples, _ = await _scrape(first.client)
        second_samples, _ = await _scrape(second.client)
    assert _value(first_samples, "mlops_predictions_total", label="setosa") == 1
    assert _value(second_samples, "mlops_predictions_total", label="setosa") == 0
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("mlops_") for n in global_names)


def test_create_app_registers_everything_on_the_given_registry(iris_bundle: Path) -> None:
    registry = CollectorRegistry()
    create_app(load_spec(iris_bundle), iris_bundle, registry)
    names = {m.name for m in registry.collect()}
    assert {n.removesuffix("_total") for n in METRIC_NAMES} <= names
