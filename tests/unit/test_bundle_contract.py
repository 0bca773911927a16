"""validate-model refuses what the server would refuse: each broken model fails stage 2 with one line and exit 1,
and nothing is assembled or built after it. The model is loaded by the server's own code in a child process."""

from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path

import pytest
from helpers import FEATURES, IRIS_SCHEMA, register_iris, require_module, run_cli

from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError, StageFailed, UsageError
from mlops_cli.stages import validate_model
from mlops_cli.state import State

THRESHOLDS = json.dumps({"accuracy": ">= 0.9"})


def _settings(work: Path):
    return load_settings(None, {"workdir": work}, environ={})


def _fails_at_validation(work: Path, ref: str, needle: str, **env: str) -> str:
    """validate-model exits 1 with one error line holding needle; assemble-server then has nothing to assemble."""
    environ = {"MLOPS_WORKDIR": str(work), "MLOPS_VALIDATION__THRESHOLDS": THRESHOLDS, **env}
    done = run_cli("validate-model", "--model", ref, env=environ, timeout=240)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(errors) == 1 and needle in errors[0], done.stderr
    state = json.loads((work / "state.json").read_text())
    assert state["validation"]["passed"] is False and state.get("model") is None
    assembled = run_cli("assemble-server", env={"MLOPS_WORKDIR": str(work)}, timeout=120)
    assert assembled.returncode == 3 and "no validated model" in assembled.stderr, assembled.stderr
    assert not (work / "bundles").exists() or not [p for p in (work / "bundles").iterdir()]
    return errors[0]


def test_duplicate_input_names(tmp_path, iris_artifact):
    work = tmp_path / "w"
    dup = {"inputs": IRIS_SCHEMA["inputs"] + [IRIS_SCHEMA["inputs"][0]], "outputs": IRIS_SCHEMA["outputs"]}
    with pytest.raises(UsageError, match=r"duplicate inputs name\(s\): sepal_length_cm"):
        register_iris(_settings(work), iris_artifact, schema=dup)  # refused at registration already
    ref = register_iris(_settings(work), iris_artifact)  # a store written otherwise (another tool, an older mlops)
    path = work / "store" / "models" / "iris" / "1.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema": dup}))
    _fails_at_validation(work, ref, "schema: duplicate inputs name(s): sepal_length_cm")


def test_random_bytes_as_a_joblib(tmp_path):
    work = tmp_path / "w"
    artifact = tmp_path / "model.joblib"
    artifact.write_bytes(os.urandom(4096))
    ref = register_iris(_settings(work), artifact)
    _fails_at_validation(work, ref, "the server would refuse it: cannot load model artifact model/model.joblib: ")


def test_a_pickle_whose_class_is_missing(tmp_path):
    import joblib

    module = types.ModuleType("vanished_team_models")  # importable while pickling, nowhere afterwards
    exec("class Model:\n    def predict(self, X):\n        return [0] * len(X)\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        joblib.dump(module.Model(), tmp_path / "model.joblib")
    finally:
        del sys.modules[module.__name__]
    work = tmp_path / "w"
    ref = register_iris(_settings(work), tmp_path / "model.joblib")
    _fails_at_validation(work, ref, "No module named 'vanished_team_models'")


def _onnx_iris(width: int) -> bytes:
    require_module("onnxruntime", "ONNX models")
    skl2onnx = require_module("skl2onnx", "exporting a test model to ONNX")
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data[:, :width], data.target)
    return skl2onnx.convert_sklearn(
        model,
        initial_types=[("X", FloatTensorType([None, width]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    ).SerializeToString()


def test_an_onnx_model_with_a_wrong_input_width(tmp_path):
    (tmp_path / "iris.onnx").write_bytes(_onnx_iris(width=3))
    work = tmp_path / "w"
    ref = register_iris(_settings(work), tmp_path / "iris.onnx", framework="onnx")
    _fails_at_validation(work, ref, "the model takes 3 features but schema.inputs has 4")


def test_a_model_whose_output_does_not_match_the_schema(tmp_path, iris_artifact):
    work = tmp_path / "w"
    ints = {"inputs": IRIS_SCHEMA["inputs"], "outputs": [{"name": "label", "type": "integer"}]}
    ref = register_iris(_settings(work), iris_artifact, schema=ints)  # labels are names: not integers
    _fails_at_validation(work, ref, "class 'setosa' cannot be an output 'label' of that declared type")
    model = tmp_path / "words.py"  # a regression model answering words where schema.outputs says number
    model.write_text("class Words:\n    def predict(self, X):\n        return ['high'] * len(X)\n")
    ref = register_iris(
        _settings(work),
        model,
        framework="python",
        class_name="Words",
        task="regression",
        labels=None,
        schema={"inputs": IRIS_SCHEMA["inputs"], "outputs": [{"name": "prediction"}]},
    )
    _fails_at_validation(
        work,
        ref,
        "example 0: the server answers 500 (prediction_failed): cannot turn the "
        "model's output into a response: ValueError",
    )


def test_examples_the_model_rejects(tmp_path, iris_artifact):
    work = tmp_path / "w"
    ref = register_iris(_settings(work), iris_artifact, examples=[{"instances": [[5.1, 3.5, 1.4]]}])
    _fails_at_validation(
        work, ref, "example 0: the server answers 422 (invalid_instance): instance 0: expected 4 values in schema order"
    )
    model = tmp_path / "picky.py"  # the model itself refuses (raises on) what the examples send
    model.write_text(
        "import numpy as np\nclass Picky:\n    classes_ = np.array([0, 1, 2])\n"
        "    def predict(self, X):\n        raise ValueError('negative widths are not flowers')\n"
        "    def predict_proba(self, X):\n        return np.full((len(X), 3), 1 / 3)\n"
    )
    ref = register_iris(_settings(work), model, framework="python", class_name="Picky", labels=None)
    _fails_at_validation(work, ref, "model failed to predict: ValueError: negative widths are not flowers")


def test_loading_is_bounded_in_time_and_memory_and_runs_outside_the_cli(tmp_path, make_settings):
    marker = tmp_path / "loaded-in.json"
    model = tmp_path / "spy.py"
    model.write_text(
        "import json, os, time\nimport numpy as np\n"
        f"MARKER = {str(marker)!r}\n"
        "class Spy:\n    classes_ = np.array([0, 1, 2])\n"
        "    def __init__(self):\n"
        "        secrets = sorted(k for k in os.environ if k.startswith(('MLOPS_', 'AWS_')) or 'PASSWORD' in k)\n"
        "        json.dump({'pid': os.getpid(), 'secrets': secrets}, open(MARKER, 'w'))\n"
        "        if os.path.exists(MARKER + '.sleep'):\n"
        "            time.sleep(60)\n"
        "        if os.path.exists(MARKER + '.hog'):\n"
        "            self.hog = bytearray(3 * 1024 ** 3)\n"
        "    def predict(self, X):\n        return np.zeros(len(X), dtype=int)\n"
        "    def predict_proba(self, X):\n        return np.full((len(X), 3), 1 / 3)\n"
    )
    settings = make_settings()
    ref = register_iris(settings, model, framework="python", class_name="Spy", labels=None)
    os.environ["AWS_SECRET_ACCESS_KEY"] = "not-for-models"
    try:
        result = validate_model.run(make_settings(workdir=settings.workdir, model=ref))
    finally:
        del os.environ["AWS_SECRET_ACCESS_KEY"]
    seen = json.loads(marker.read_text())
    assert seen == {"pid": seen["pid"], "secrets": []} and seen["pid"] != os.getpid()
    assert [c.passed for c in result.checks if c.name == "trial run"] == [True]
    marker.unlink()
    holdout = tmp_path / "holdout.csv"  # holdout scoring loads the model in a clean child process too
    holdout.write_text(",".join(FEATURES + ["species"]) + "\n5.1,3.5,1.4,0.2,0\n6.7,3.0,5.2,2.3,2\n")
    os.environ["MLOPS_BUILD__PASSWORD"] = "not-for-models"
    try:
        scored = validate_model.run(
            make_settings(
                workdir=settings.workdir, model=ref, validation={"holdout": {"path": str(holdout), "target": "species"}}
            )
        )
    finally:
        del os.environ["MLOPS_BUILD__PASSWORD"]
    seen = json.loads(marker.read_text())
    assert seen["secrets"] == [] and seen["pid"] != os.getpid() and scored.holdout["accuracy"] == 0.5

    Path(str(marker) + ".sleep").touch()
    with pytest.raises(StageFailed, match=r"took longer than 3 s \(validation.load_timeout_s\)"):
        validate_model.run(make_settings(workdir=settings.workdir, model=ref, validation={"load_timeout_s": 3}))
    Path(str(marker) + ".sleep").unlink()
    Path(str(marker) + ".hog").touch()
    with pytest.raises(
        StageFailed,
        match=r"cannot load model artifact model/spy.py: MemoryError.*"
        r"\(validation.load_memory_mb is 1024\)",
    ):
        validate_model.run(make_settings(workdir=settings.workdir, model=ref, validation={"load_memory_mb": 1024}))
    assert State.load(settings.workdir).validation.passed is False


def test_holdout_with_an_onnx_model_scores_as_the_sklearn_one(tmp_path, make_settings):
    import csv

    from sklearn.datasets import load_iris

    (tmp_path / "iris.onnx").write_bytes(_onnx_iris(width=4))
    data = load_iris()
    names = ["setosa", "versicolor", "virginica"]
    with open(tmp_path / "holdout.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FEATURES + ["species"])
        writer.writerows([list(map(float, row)) + [names[t]] for row, t in zip(data.data[::3], data.target[::3])])
    settings = make_settings()
    ref = register_iris(settings, tmp_path / "iris.onnx", framework="onnx")
    holdout = {
        "path": str(tmp_path / "holdout.csv"),
        "target": "species",
        "thresholds": {"accuracy": ">= 0.9", "roc_auc": ">= 0.95"},
    }
    result = validate_model.run(make_settings(workdir=settings.workdir, model=ref, validation={"holdout": holdout}))
    assert result.holdout["accuracy"] >= 0.9 and result.holdout["roc_auc"] >= 0.95 and 0 < result.holdout["f1"] <= 1


def test_metric_thresholds_are_required_unless_waived(tmp_path, make_settings, iris_artifact):
    settings = make_settings()
    ref = register_iris(settings, iris_artifact)
    with pytest.raises(ConfigError, match=r"no metric thresholds configured.*validation.allow_no_thresholds: true"):
        validate_model.run(
            make_settings(workdir=settings.workdir, model=ref, validation={"allow_no_thresholds": False})
        )
    assert (
        validate_model.run(
            make_settings(workdir=settings.workdir, model=ref, validation={"allow_no_thresholds": True})
        ).model_ref
        == ref
    )
    done = run_cli("validate-model", "--model", ref, env={"MLOPS_WORKDIR": str(settings.workdir)})
    assert done.returncode == 2 and "no metric thresholds configured" in done.stderr


def test_nan_or_infinite_metrics_are_refused(tmp_path, iris_artifact):
    work = tmp_path / "w"
    for value in (math.nan, math.inf):
        with pytest.raises(UsageError, match="metrics.accuracy: Input should be a finite number"):
            register_iris(_settings(work), iris_artifact, metrics={"accuracy": value})
    done = run_cli(
        "model", "register", str(iris_artifact), "--name", "iris", "--metrics", "accuracy=nan", "--workdir", str(work)
    )
    assert done.returncode == 2 and "finite number" in done.stderr and "Traceback" not in done.stderr
    ref = register_iris(_settings(work), iris_artifact)
    path = work / "store" / "models" / "iris" / "1.json"
    path.write_text(path.read_text().replace('"accuracy": 0.96', '"accuracy": NaN'))
    _fails_at_validation(work, ref, "metrics.accuracy: Input should be a finite number")
