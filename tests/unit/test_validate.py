import pytest
from helpers import IRIS_SCHEMA, register_iris

from mlops_cli.errors import StageFailed, UsageError
from mlops_cli.sources import sha256_file
from mlops_cli.sources.local import LocalStore
from mlops_cli.stages import validate_model
from mlops_cli.state import DeploymentRecord, State


def validate(make_settings, ref, workdir=None, **validation):
    return validate_model.run(make_settings(workdir=workdir, model=ref, validation=validation))


def test_valid_model_is_pinned(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact)
    result = validate(make_settings, ref, settings.workdir, thresholds={"accuracy": ">= 0.9"})
    state = State.load(settings.workdir)
    assert result.sha256 == sha256_file(iris_artifact) == state.model.sha256
    assert state.validation.passed and state.stages["validate-model"].status == "passed"
    assert {c.name for c in result.checks} == {"artifact digest", "trial run", "metric accuracy", "validator tag"}
    assert [c.detail for c in result.checks if c.name == "trial run"] == [
        "loaded as the server loads it; 2 example request(s) answered as schema.outputs says"
    ]


def test_latest_version_is_pinned_by_number(settings, make_settings, iris_artifact):
    register_iris(settings, iris_artifact)
    register_iris(settings, iris_artifact)
    assert validate(make_settings, "local:iris", settings.workdir).model_ref == "local:iris@2"


def test_below_threshold_fails_and_says_why(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact, metrics={"accuracy": 0.81})
    with pytest.raises(StageFailed, match=r"accuracy = 0.81, needs >= 0.9"):
        validate(make_settings, ref, settings.workdir, thresholds={"accuracy": ">= 0.9"})
    state = State.load(settings.workdir)
    assert state.validation.passed is False and state.model is None
    assert state.stages["validate-model"].status == "failed"


def test_unreported_metric_fails(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact)
    with pytest.raises(StageFailed, match="f1 is not reported"):
        validate(make_settings, ref, settings.workdir, thresholds={"f1": ">= 0.5"})


def test_missing_validator_tag(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact, tags=[])
    with pytest.raises(StageFailed, match="tag 'validated' missing"):
        validate(make_settings, ref, settings.workdir)
    assert validate(make_settings, ref, settings.workdir, validator_tag="").model_ref == ref


def test_altered_artifact_fails_the_digest_check(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact)
    blob = LocalStore(settings.store_path).blob(sha256_file(iris_artifact))
    blob.write_bytes(blob.read_bytes()[:-10])  # truncated
    with pytest.raises(StageFailed, match="corrupt or altered artifact"):
        validate(make_settings, ref, settings.workdir)


def test_missing_schema(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact, schema=None)
    with pytest.raises(StageFailed, match="has no input/output schema"):
        validate(make_settings, ref, settings.workdir)


def test_no_model_given(settings):
    with pytest.raises(UsageError, match="no model given"):
        validate_model.run(settings)


def _pretend_deployed(workdir, schema):
    state = State.load(workdir)
    state.deployments["prod"] = DeploymentRecord(
        env="prod",
        target="local",
        url="http://127.0.0.1:1",
        model_ref="local:iris@1",
        model_name="iris",
        model_version="1",
        model_sha256="0" * 64,
        bundle_digest="0" * 64,
        bundle_path="/nonexistent",
        schema=schema,
        revision=1,
    )
    state.save(workdir)


def test_breaking_change_against_deployed_model(settings, make_settings, iris_artifact):
    _pretend_deployed(settings.workdir, IRIS_SCHEMA)
    renamed = {
        "inputs": [{"name": "sepal_len", "type": "number"}] + IRIS_SCHEMA["inputs"][1:],
        "outputs": IRIS_SCHEMA["outputs"],
    }
    ref = register_iris(settings, iris_artifact, schema=renamed, examples=[{"instances": [[5.1, 3.5, 1.4, 0.2]]}])
    with pytest.raises(StageFailed, match=r"breaking change against iris@1 in prod: input 'sepal_length_cm' removed"):
        validate(make_settings, ref, settings.workdir)
    result = validate(make_settings, ref, settings.workdir, allow_breaking=True)
    assert "allowed by --allow-breaking" in [c for c in result.checks if c.name == "interface"][0].detail


def test_added_optional_input_is_compatible(settings, make_settings, tmp_path):
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()  # a model that takes the fifth input, as the server checks
    artifact = tmp_path / "wider.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(np.c_[data.data, np.zeros(len(data.data))], data.target), artifact)
    _pretend_deployed(settings.workdir, IRIS_SCHEMA)
    wider = {
        "inputs": IRIS_SCHEMA["inputs"] + [{"name": "extra", "type": "number", "required": False, "default": 0}],
        "outputs": IRIS_SCHEMA["outputs"],
    }
    ref = register_iris(settings, artifact, schema=wider)
    checks = validate(make_settings, ref, settings.workdir).checks
    assert [c.detail for c in checks if c.name == "interface"] == ["compatible with iris@1 in prod"]
