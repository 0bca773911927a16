"""ONNX models (skl2onnx exports) served through onnxruntime: the same answers as the
scikit-learn model they came from, class order read from the graph, bad graphs refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_bundles import IRIS_FEATURES, IRIS_LABELS, IRIS_ROWS, inputs, write_bundle

from serving.app import create_app
from serving.errors import BundleError
from serving.modules.onnx import class_labels
from serving.spec import load_spec

pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")
onnx = pytest.importorskip("onnx")

pytestmark = pytest.mark.anyio


def export(model: Any, width: int, *, zipmap: bool = True, double: bool = False) -> bytes:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    kind = DoubleTensorType if double else FloatTensorType
    options = None if zipmap or not hasattr(model, "predict_proba") else {id(model): {"zipmap": False}}
    return skl2onnx.convert_sklearn(
        model, initial_types=[("X", kind([None, width]))], options=options, target_opset=17
    ).SerializeToString()


def graph_labels(data: bytes) -> list[Any] | None:
    """The onnx package's own reading, to check ours against."""
    for node in onnx.load_from_string(data).graph.node:
        for attr in node.attribute:
            if attr.name.startswith("classlabels_"):
                return [s.decode() for s in attr.strings] or list(attr.ints)
    return None


def test_class_labels_read_as_the_onnx_package_reads_them(iris_model, diabetes_model) -> None:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    features, target = load_iris(return_X_y=True)
    named = DecisionTreeClassifier(random_state=0).fit(features, np.array(IRIS_LABELS)[target])
    shifted = DecisionTreeClassifier(random_state=0).fit(features, target * 7 - 5)  # negative ints too
    for model, expected in [(iris_model, [0, 1, 2]), (named, IRIS_LABELS), (shifted, [-5, 2, 9])]:
        for zipmap in (True, False):
            data = export(model, 4, zipmap=zipmap)
            assert class_labels(data) == graph_labels(data) == expected
    assert class_labels(export(diabetes_model[0], 10)) is None


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "tensor"])
async def test_classifier_answers_as_the_sklearn_model(tmp_path: Path, served, iris_model, zipmap) -> None:
    bundle = write_bundle(tmp_path, export(iris_model, 4, zipmap=zipmap), labels=IRIS_LABELS)
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": IRIS_ROWS})
        assert r.status_code == 200, r.text
        rows = np.asarray(IRIS_ROWS)
        expected = [IRIS_LABELS[i] for i in iris_model.predict(rows)]
        assert [p["label"] for p in r.json()["predictions"]] == expected
        best = iris_model.predict_proba(rows).max(axis=1)
        assert np.allclose([p["probability"] for p in r.json()["predictions"]], best, atol=1e-5)
        assert (
            s.registry.get_sample_value(
                "mlops_model_info",
                {"name": "iris", "version": "1", "sha256": load_spec(bundle).model.sha256, "framework": "onnx"},
            )
            == 1.0
        )


async def test_regressor_with_double_input(tmp_path: Path, served, diabetes_model) -> None:
    model, names = diabetes_model
    bundle = write_bundle(tmp_path, export(model, 10, double=True), task="regression", inputs_=inputs(names))
    rows = np.random.default_rng(0).normal(0, 0.05, size=(5, 10))
    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", json={"instances": rows.tolist()})
        assert r.status_code == 200, r.text
        got = [p["prediction"] for p in r.json()["predictions"]]
    assert np.allclose(got, model.predict(rows), rtol=1e-9)


async def _startup_error(bundle: Path) -> str:
    app = create_app(load_spec(bundle), bundle, CollectorRegistry())
    with pytest.raises(BundleError) as err:
        async with app.router.lifespan_context(app):
            pass
    return str(err.value)


async def test_feature_count_must_match_the_schema(tmp_path: Path, iris_model) -> None:
    bundle = write_bundle(tmp_path, export(iris_model, 4), inputs_=inputs(IRIS_FEATURES[:3]))
    message = await _startup_error(bundle)
    assert message == (f"the model takes 4 features but schema.inputs has 3: {IRIS_FEATURES[:3]}")


async def test_a_graph_with_several_inputs_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two-inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    bundle = write_bundle(tmp_path, data, task="regression", inputs_=inputs(["a", "b"]))
    message = await _startup_error(bundle)
    assert message.startswith(
        "the ONNX model needs one 2-D float or double input [N, features]; it has a tensor(float)"
    )


async def test_bytes_that_are_no_onnx_graph_are_refused_once_verified(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, b"not an onnx graph", task="regression", inputs_=inputs(["x"]))
    message = await _startup_error(bundle)
    assert message.startswith("cannot load model artifact model/model.onnx: ")
    assert "\n" not in message
