"""spec.json loading: a valid spec parses; every kind of bad spec is one line naming the place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from serving_bundles import IRIS_FEATURES, edit_spec, write_bundle

from serving.app import create_app
from serving.errors import BundleError
from serving.spec import load_spec


def test_valid_spec_loads(iris_bundle: Path) -> None:
    spec = load_spec(iris_bundle)
    assert spec.model.name == "iris" and spec.model.framework == "sklearn"
    assert [f.name for f in spec.io.inputs] == IRIS_FEATURES
    assert spec.io.numeric is True
    assert [m.name for m in spec.modules] == ["preprocessing", "model", "postprocessing"]
    assert spec.server.max_body_bytes == 1_048_576 and spec.server.drain_seconds == 1.0


def test_server_section_is_optional(iris_bundle: Path) -> None:
    edit_spec(iris_bundle, lambda d: d.pop("server"))
    assert load_spec(iris_bundle).server.max_body_bytes == 1_048_576


def _set(path: str, value):
    def change(doc):
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return change


_DELETE = object()

BAD_SPECS = [
    ("extra", 1, "spec.json: extra: unknown key"),
    ("model.colour", "red", "spec.json: model.colour: unknown key"),
    ("model.sha256", "ABC", "spec.json: model.sha256: must be 64 lowercase hex characters"),
    ("model.sha256", "A" * 64, "spec.json: model.sha256: must be 64 lowercase hex characters"),
    ("model.framework", "tensorflow", "spec.json: model.framework:"),
    ("model.task", "clustering", "spec.json: model.task:"),
    ("model.artifact", "../outside.joblib", "model.artifact: must be a relative path inside the bundle"),
    ("model.artifact", "/etc/passwd", "model.artifact: must be a relative path inside the bundle"),
    ("model.framework", "python", "framework 'python' needs class_name"),
    ("model.name", _DELETE, "spec.json: model.name: missing required key"),
    ("spec_version", 2, "spec.json: spec_version:"),
    ("schema.inputs", [], "spec.json: schema.inputs:"),
    ("schema.inputs.0.type", "float", "spec.json: schema.inputs.0.type:"),
    ("schema.inputs.0.required", "yes", "spec.json: schema.inputs.0.required:"),
    ("schema.inputs.0.required", False, "optional input 'sepal_length_cm' needs a default of type number"),
    ("schema.inputs.1.name", "sepal_length_cm", "duplicate inputs name(s): sepal_length_cm"),
    ("server.max_body_bytes", 0, "spec.json: server.max_body_bytes:"),
    ("server.max_body_bytes", "1MB", "spec.json: server.max_body_bytes:"),
    ("server.drain_seconds", -1, "spec.json: server.drain_seconds:"),
    ("modules", [], "spec.json: modules:"),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD_SPECS, ids=[f"{p}={v!r}" for p, v, _ in BAD_SPECS])
def test_bad_spec_is_one_line_naming_the_place(iris_bundle: Path, path: str, value, expected: str) -> None:
    edit_spec(iris_bundle, _set(path, value))
    with pytest.raises(BundleError) as err:
        load_spec(iris_bundle)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{", "spec.json: not valid JSON"), ('{"spec_version": NaN}', "NaN is not valid JSON"), ("[]", "(top level)")],
)
def test_spec_that_is_not_a_json_object(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "spec.json").write_text(text)
    with pytest.raises(BundleError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_spec(tmp_path)


def test_missing_spec(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no spec\.json in bundle"):
        load_spec(tmp_path)


BAD_MODULES = [
    (
        lambda d: d["modules"].append({"name": "shap"}),
        "unknown module 'shap' (known: preprocessing, outlier, drift, model, postprocessing; or a user module by dotted path",
    ),
    (lambda d: d["modules"].append({"name": "drift"}), "drift must come after preprocessing and before model"),
    (lambda d: d["modules"].__setitem__(slice(1, 1), [{"name": "drift"}] * 2), "drift listed more than once"),
    (
        lambda d: d["modules"].insert(1, {"name": "outlier", "settings": {"method": "mad"}}),
        "modules.1.settings.method: Input should be 'zscore' or 'iqr'",
    ),
    (
        lambda d: d["modules"].insert(
            1, {"name": "outlier", "settings": {"detector": "/etc/d.joblib", "detector_sha256": "0" * 64}}
        ),
        "modules.1.settings.detector: Value error, must be a relative path inside the bundle",
    ),
    (
        lambda d: d["modules"].insert(1, {"name": "outlier", "settings": {"detector": "d.joblib"}}),
        "detector and detector_sha256 go together",
    ),
    (lambda d: d["modules"].pop(1), "must include preprocessing, model, postprocessing once each, in that order"),
    (lambda d: d["modules"].reverse(), "in that order"),
    (lambda d: d["modules"][0].update(settings={"scaling": True}), "modules.0.settings.scaling: unknown setting"),
    (lambda d: d["modules"][2].update(settings={"labels": "setosa"}), "modules.2.settings.labels:"),
    (lambda d: d["modules"][2].update(settings={"labels": []}), "modules.2.settings.labels:"),
    (
        lambda d: d["schema"]["outputs"].append({"name": "prediction", "type": "number"}),
        "schema.outputs ['prediction'] cannot be filled for task classification (it provides: label, probability)",
    ),
]


@pytest.mark.parametrize(("change", "expected"), BAD_MODULES)
def test_bad_modules_are_refused_when_the_app_is_built(iris_bundle: Path, change, expected: str) -> None:
    edit_spec(iris_bundle, change)
    with pytest.raises(BundleError) as err:
        create_app(load_spec(iris_bundle), iris_bundle, CollectorRegistry())
    assert expected in str(err.value)


def test_spec_file_round_trips_what_the_helper_wrote(tmp_path: Path, iris_model) -> None:
    bundle = write_bundle(tmp_path, iris_model, version="7")
    document = json.loads((bundle / "spec.json").read_text())
    spec = load_spec(bundle)
    assert spec.model.version == "7" and spec.model.sha256 == document["model"]["sha256"]
