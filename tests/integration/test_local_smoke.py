"""smoke-test against real servers: examples that rely on optional inputs, a wrong revision."""

import pytest
from helpers import read_state, register_iris

from mlops_cli.stages import assemble_server, deploy_to_test_env, smoke, validate_model

pytestmark = pytest.mark.integration

CONSTANT = """
class Constant:
    def predict(self, X):
        return ["yes" if row[1] == 0.0 else "no" for row in X]
"""


def test_examples_may_leave_optional_inputs_out(make_settings, settings, tmp_path):
    model = tmp_path / "constant.py"
    model.write_text(CONSTANT)
    schema = {
        "inputs": [{"name": "a", "type": "number"}, {"name": "b", "type": "number", "required": False, "default": 0.0}],
        "outputs": [{"name": "label", "type": "string"}],
    }
    ref = register_iris(
        settings,
        model,
        name="constant",
        framework="python",
        class_name="Constant",
        labels=None,
        schema=schema,
        examples=[{"instances": [{"a": 1.0}]}, {"instances": [{"a": 1.0, "b": 2.0}]}],
        reference=None,
    )
    s = make_settings(workdir=settings.workdir, model=ref, deploy=settings.deploy.model_dump(mode="json"))
    for stage in (validate_model, assemble_server, deploy_to_test_env):
        stage.run(s)
    result = smoke.run(s)
    assert result.requests == 20 and read_state(s.workdir)["smoke"]["problems"] == []


def test_smoke_test_over_the_open_inference_protocol(make_settings, settings, tmp_path):
    """smoke.protocol v2: the examples (one relying on an optional input), the invalid probes and
    the timed requests all go to /v2/models/{name}/infer on the real server, and pass."""
    model = tmp_path / "constant.py"
    model.write_text(CONSTANT)
    schema = {
        "inputs": [{"name": "a", "type": "number"}, {"name": "b", "type": "number", "required": False, "default": 0.0}],
        "outputs": [{"name": "label", "type": "string"}],
    }
    ref = register_iris(
        settings,
        model,
        name="constant",
        framework="python",
        class_name="Constant",
        labels=None,
        schema=schema,
        examples=[{"instances": [{"a": 1.0}, [2.0, 0.0]]}, {"instances": [{"a": 1.0, "b": 2.0}]}],
        reference=None,
    )
    s = make_settings(
        workdir=settings.workdir,
        model=ref,
        deploy=settings.deploy.model_dump(mode="json"),
        smoke={"protocol": "v2", "requests": 5},
    )
    for stage in (validate_model, assemble_server, deploy_to_test_env):
        stage.run(s)
    result = smoke.run(s)
    assert result.requests == 5 and read_state(s.workdir)["smoke"]["problems"] == []
    import httpx

    metrics = httpx.get(f"{result.url}/metrics", timeout=10).text
    infer = [
        line
        for line in metrics.splitlines()
        if line.startswith("mlops_http_requests_total") and 'route="/v2/models/{name}/infer"' in line
    ]
    assert any('status="200"' in line and not line.endswith(" 0.0") for line in infer), infer
    assert any('status="400"' in line for line in infer), infer  # the invalid probes, refused
    assert not any(
        'route="/v1/predict"' in line for line in metrics.splitlines() if line.startswith("mlops_http_requests_total")
    )
