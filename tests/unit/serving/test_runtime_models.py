"""Model loading: the artifact is loaded only when its sha256 matches, and every reason a
model cannot be served is refused at startup with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from serving_bundles import IRIS_FEATURES, edit_spec, inputs, write_bundle

from serving.app import create_app
from serving.errors import BundleError
from serving.spec import load_spec

pytestmark = pytest.mark.anyio


async def _startup_error(bundle: Path) -> tuple[str, object]:
    app = create_app(load_spec(bundle), bundle, CollectorRegistry())
    with pytest.raises(BundleError) as err:
        async with app.router.lifespan_context(app):
            pass
    state = app.state.serving
    assert state.ready is False and state.load_error is err.value
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message, app


async def test_altered_joblib_artifact_is_refused(iris_bundle: Path) -> None:
    with open(iris_bundle / "model" / "model.joblib", "ab") as f:
        f.write(b"\0")
    message, _ = await _startup_error(iris_bundle)
    assert message.startswith("model artifact model/model.joblib sha256 mismatch: expected ")
    assert message.endswith("(corrupt or altered artifact)")


SIDE_EFFECT = """
from pathlib import Path
Path(__file__).with_name("executed").write_text("yes")

class Model:
    def predict(self, X):
        return X[:, 0]
"""


async def test_altered_python_artifact_is_never_executed(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, SIDE_EFFECT, class_name="Model", task="regression", inputs_=inputs(["x"]))
    (bundle / "model" / "model.py").write_text(SIDE_EFFECT + "\n# altered\n")
    message, _ = await _startup_error(bundle)
    assert "model/model.py sha256 mismatch" in message
    assert not (bundle / "model" / "executed").exists()


async def test_unaltered_python_artifact_is_executed_once_verified(tmp_path: Path, served) -> None:
    bundle = write_bundle(tmp_path, SIDE_EFFECT, class_name="Model", task="regression", inputs_=inputs(["x"]))
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": [[4.25]]})
    assert (bundle / "model" / "executed").read_text() == "yes"
    assert r.json() == {"predictions": [{"prediction": 4.25}]}


async def test_missing_artifact(iris_bundle: Path) -> None:
    (iris_bundle / "model" / "model.joblib").unlink()
    message, _ = await _startup_error(iris_bundle)
    assert message.startswith("model artifact model/model.joblib not found in bundle")


async def test_unloadable_artifact_with_matching_sha(tmp_path: Path, iris_model) -> None:
    bundle = write_bundle(tmp_path, iris_model)
    (bundle / "model" / "model.joblib").write_bytes(b"not a pickle\nat all")
    edit_spec(
        bundle, lambda d: d["model"].update(sha256=__import__("hashlib").sha256(b"not a pickle\nat all").hexdigest())
    )
    message, _ = await _startup_error(bundle)
    assert message.startswith("cannot load model artifact model/model.joblib: ")


@pytest.mark.parametrize(
    ("source", "class_name", "expected"),
    [
        ("class Other:\n    pass\n", "Model", "defines no class 'Model'"),
        ("class Model:\n    pass\n", "Model", "Model has no predict method"),
        (
            "class Model:\n    def __init__(self):\n        raise ValueError('no\\nweights')\n    def predict(self, X): ...\n",
            "Model",
            "cannot load model artifact model/model.py: ValueError: no weights",
        ),
        ("def broken(:\n", "Model", "cannot load model artifact model/model.py: SyntaxError"),
    ],
)
async def test_python_artifact_problems(tmp_path: Path, source: str, class_name: str, expected: str) -> None:
    bundle = write_bundle(tmp_path, source, class_name=class_name, task="regression", inputs_=inputs(["x"]))
    message, _ = await _startup_error(bundle)
    assert expected in message


async def test_labels_must_match_the_model_classes(tmp_path: Path, iris_model) -> None:
    bundle = write_bundle(tmp_path, iris_model, labels=["a", "b"])
    message, _ = await _startup_error(bundle)
    assert message == "postprocessing.labels has 2 labels but the model has 3 classes [0, 1, 2]"


async def test_probability_needs_predict_proba(tmp_path: Path) -> None:
    source = "import numpy as np\nclass M:\n    def predict(self, X):\n        return np.zeros(len(X))\n"
    bundle = write_bundle(tmp_path, source, class_name="M", inputs_=inputs(["x"]))
    message, _ = await _startup_error(bundle)
    assert message == "schema.outputs has 'probability' but the model has no predict_proba"


async def test_model_fitted_on_other_feature_names_is_refused(tmp_path: Path) -> None:
    source = (
        "import numpy as np\nclass M:\n    feature_names_in_ = np.array(['petal_width_cm', 'sepal_length_cm'])\n"
        "    def predict(self, X):\n        return X[:, 0]\n"
    )
    bundle = write_bundle(
        tmp_path, source, class_name="M", task="regression", inputs_=inputs(["sepal_length_cm", "petal_width_cm"])
    )
    message, _ = await _startup_error(bundle)
    assert "fitted on features ['petal_width_cm', 'sepal_length_cm']" in message


async def test_model_info_metric_is_set_once_loaded(iris) -> None:
    spec = iris.app.state.pipeline.modules[1].ctx.spec
    value = iris.registry.get_sample_value(
        "mlops_model_info",
        {"name": "iris", "version": "1", "sha256": spec.model.sha256, "framework": "sklearn"},
    )
    assert value == 1.0
    assert [f.name for f in spec.io.inputs] == IRIS_FEATURES
