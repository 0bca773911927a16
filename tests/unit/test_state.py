import json

import pytest

from mlops_cli.errors import ConfigError, PrerequisiteError
from mlops_cli.state import State, ValidationRecord


def test_missing_state_is_empty(tmp_path):
    state = State.load(tmp_path)
    assert state.model is None and state.deployments == {}


def test_save_is_atomic_and_round_trips(tmp_path):
    state = State(validation=ValidationRecord(passed=False, model_ref="local:x@1"))
    state.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind
    assert State.load(tmp_path).validation.model_ref == "local:x@1"
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 1


def test_corrupt_state_is_a_clear_error(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="state file .* is not valid"):
        State.load(tmp_path)


@pytest.mark.parametrize("require, hint", [
    (lambda s: s.require_validated(), "mlops validate-model"),
    (lambda s: s.require_bundle(), "mlops validate-model"),
    (lambda s: s.require_deployment("test", "deploy-test"), "mlops validate-model"),
    (lambda s: s.require_smoke_passed(), "mlops validate-model"),
])
def test_missing_inputs_name_the_stage_to_run_first(require, hint):
    with pytest.raises(PrerequisiteError) as info:
        require(State())
    assert hint in str(info.value)


def test_failed_validation_blocks_later_stages():
    state = State(validation=ValidationRecord(passed=False, model_ref="local:x@1"))
    with pytest.raises(PrerequisiteError, match="no validated model"):
        state.require_bundle()
