import json
from pathlib import Path

import pytest
from helpers import register_iris

from mlops_cli.errors import ConfigError, PrerequisiteError, StageFailed
from mlops_cli.stages import assemble_server, deploy_to_test_env, rolling_update, smoke, validate_model
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


def test_each_stage_names_the_stage_to_run_first(make_settings, settings, iris_artifact):
    s = make_settings(workdir=settings.workdir, model=register_iris(settings, iris_artifact))
    with pytest.raises(PrerequisiteError, match="run `mlops validate-model --model REF` first"):
        assemble_server.run(s)
    validate_model.run(s)
    for stage in (deploy_to_test_env, smoke, rolling_update):
        with pytest.raises(PrerequisiteError, match="run `mlops assemble-server` first"):
            stage.run(s)
    assemble_server.run(s)
    with pytest.raises(PrerequisiteError, match="run `mlops deploy-test` first"):
        smoke.run(s)
    with pytest.raises(PrerequisiteError, match="run `mlops smoke-test` first"):
        rolling_update.run(s)


@pytest.mark.parametrize(
    "bad_model",
    [
        {"metrics": {"accuracy": 0.1}},  # fails a check
        {"schema": None},  # fails before the checks
        {"name": "other", "tags": []},  # another model, missing its tag
    ],
)
def test_a_failed_validation_blocks_what_passed_before(make_settings, settings, iris_artifact, bad_model):
    good = make_settings(
        workdir=settings.workdir,
        model=register_iris(settings, iris_artifact),
        validation={"thresholds": {"accuracy": ">= 0.9"}},
    )
    validate_model.run(good)
    assemble_server.run(good)
    bad = make_settings(
        workdir=settings.workdir,
        model=register_iris(settings, iris_artifact, **bad_model),
        validation={"thresholds": {"accuracy": ">= 0.9"}},
    )
    with pytest.raises(StageFailed):
        validate_model.run(bad)
    for stage in (assemble_server, deploy_to_test_env, smoke, rolling_update):
        with pytest.raises(PrerequisiteError, match="did not pass validation"):
            stage.run(good)


def test_a_bundle_changed_after_assembly_is_refused(make_settings, settings, iris_artifact):
    s = make_settings(workdir=settings.workdir, model=register_iris(settings, iris_artifact))
    validate_model.run(s)
    bundle = Path(assemble_server.run(s).bundle_path)
    (bundle / "serving" / "app.py").write_text("print('not the runtime')\n")
    with pytest.raises(PrerequisiteError, match="changed since it was assembled"):
        deploy_to_test_env.run(s)
    assert Path(assemble_server.run(s).bundle_path) == bundle  # assembling again replaces it whole
    assert "not the runtime" not in (bundle / "serving" / "app.py").read_text()
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]


def test_metadata_changed_after_validation_is_refused(make_settings, settings, iris_artifact):
    s = make_settings(workdir=settings.workdir, model=register_iris(settings, iris_artifact))
    validate_model.run(s)
    meta = settings.store_path / "models" / "iris" / "1.json"
    meta.write_text(meta.read_text().replace('"setosa"', '"rose"'))
    with pytest.raises(StageFailed, match="changed since it was validated"):
        assemble_server.run(s)
