"""The toolkit's smoke suite: a model goes from the local store to a bundle that answers."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CollectorRegistry

from mlops_cli.config import load_settings
from mlops_cli.demo import DEMO_THRESHOLDS, train_and_register
from mlops_cli.stages import assemble_server, validate_model
from serving.app import create_app
from serving.spec import load_spec


async def _exercise(bundle: str) -> dict:
    app = create_app(load_spec(bundle), bundle, CollectorRegistry())
    async with app.router.lifespan_context(app):  # loads and verifies the model, as a server does
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://selftest") as client:
            return {
                "ready": (await client.get("/health/ready")).status_code,
                "answer": await client.post("/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}),
                "short": (await client.post("/v1/predict", json={"instances": [[5.1, 3.5]]})).status_code,
                "metrics": (await client.get("/metrics")).text,
            }


def test_registered_model_assembles_into_a_bundle_that_answers(tmp_path):
    settings = load_settings(None, {"workdir": tmp_path, "validation": {"thresholds": DEMO_THRESHOLDS}}, environ={})
    settings = settings.model_copy(update={"model": train_and_register(settings)})
    validate_model.run(settings)
    seen = asyncio.run(_exercise(assemble_server.run(settings).bundle_path))
    assert seen["ready"] == 200
    assert seen["answer"].status_code == 200
    assert seen["answer"].json()["predictions"][0]["label"] == "setosa"
    assert seen["short"] == 422
    assert 'mlops_http_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in seen["metrics"]
