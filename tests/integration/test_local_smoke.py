"""smoke-test against real servers: examples that rely on optional inputs, a wrong revision."""

import pytest

from helpers import read_state, register_iris
from mlops_cli.stages import assemble_server, deploy_test, smoke_test, validate_model

pytestmark = pytest.mark.integration

CONSTANT = """
class Constant:
    def predict(self, X):
        return ["yes" if row[1] == 0.0 else "no" for row in X]
"""


def test_examples_may_leave_optional_inputs_out(make_settings, settings, tmp_path):
    model = tmp_path / "constant.py"
    model.write_text(CONSTANT)
    schema = {"inputs": [{"name": "a", "type": "number"},
                         {"name": "b", "type": "number", "required": False, "default": 0.0}],
              "outputs": [{"name": "label", "type": "string"}]}
    ref = register_iris(settings, model, name="constant", framework="python", class_name="Constant", labels=None,
                        schema=schema, examples=[{"instances": [{"a": 1.0}]}, {"instances": [{"a": 1.0, "b": 2.0}]}],
                        reference=None)
    s = make_settings(workdir=settings.workdir, model=ref, deploy=settings.deploy.model_dump(mode="json"))
    for stage in (validate_model, assemble_server, deploy_test):
        stage.run(s)
    result = smoke_test.run(s)
    assert result.requests == 20 and read_state(s.workdir)["smoke"]["problems"] == []
