"""The toolkit's smoke suite: a model goes from the local store to a bundle that answers."""

from __future__ import annotations

from starlette.testclient import TestClient
from prometheus_client import CollectorRegistry

from mlops_cli.config import load_settings
from mlops_cli.demo import train_and_register
from mlops_cli.stages import assemble_server, validate_model
from serving.app import create_app
from serving.spec import load_spec


def test_registered_model_assembles_into_a_bundle_that_answers(tmp_path):
    settings = load_settings(None, {"workdir": tmp_path}, environ={})
    settings = settings.model_copy(update={"model": train_and_register(settings)})
    validate_model.run(settings)
    bundle = assemble_server.run(settings).bundle_path
    app = create_app(load_spec(bundle), bundle, CollectorRegistry())
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 200
        answer = client.post("/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert answer.status_code == 200
        assert answer.json()["predictions"][0]["label"] == "setosa"
        assert client.post("/v1/predict", json={"instances": [[5.1, 3.5]]}).status_code == 422
        assert "mlops_http_requests_total" in client.get("/metrics").text
