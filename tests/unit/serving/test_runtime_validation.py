"""Request validation: each bad input gives the documented status and a message naming the
instance index and the feature; JSON error bodies, never a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from serving_bundles import IRIS_ROWS, write_bundle

from serving.errors import InvalidInstance
from serving.modules.preprocessing import InstanceValidator
from serving.spec import InputSpec

pytestmark = pytest.mark.anyio
GOOD = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}

BAD_BODIES = [
    (b"{", 400, "bad_request", ["malformed JSON"]),
    (b"\xff\xfe\x00", 400, "bad_request", ["malformed JSON"]),
    (b"", 400, "bad_request", ["empty request body"]),
    (b"[1, 2]", 400, "bad_request", ['expected a JSON object {"instances"', "got array"]),
    (b'"instances"', 400, "bad_request", ["got string"]),
    (b'{"rows": []}', 400, "bad_request", ["missing 'instances'"]),
    (b'{"instances": {"a": 1}}', 400, "bad_request", ["'instances' must be a list", "got object"]),
    (b'{"instances": []}', 400, "bad_request", ["'instances' is empty"]),
    (b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "id": 1}', 400, "bad_request", ["unknown key(s) 'id'"]),
    (b"[" * 100_000, 400, "bad_request", ["malformed JSON"]),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "parts"), BAD_BODIES, ids=[b[:20].decode(errors="replace") for b, *_ in BAD_BODIES]
)
async def test_bad_body(iris, body: bytes, status: int, code: str, parts: list[str]) -> None:
    r = await iris.client.post("/v1/predict", content=body)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == code
    for part in parts:
        assert part in error["message"]


def _rows(bad_row, index: int = 1) -> bytes:
    rows = [list(r) for r in IRIS_ROWS]
    rows[index] = bad_row
    return json.dumps({"instances": rows}).encode()


BAD_INSTANCES = [
    ("too few values", _rows([5.1, 3.5, 1.4]), ["instance 1:", "expected 4 values in schema order", "got 3"]),
    ("too many values", _rows([5.1, 3.5, 1.4, 0.2, 9]), ["instance 1:", "got 5"]),
    (
        "string for number",
        _rows([5.1, "wide", 1.4, 0.2]),
        ["instance 1, feature 'sepal_width_cm'", "expected number, got string 'wide'"],
    ),
    (
        "bool is not a number",
        _rows([True, 3.5, 1.4, 0.2]),
        ["instance 1, feature 'sepal_length_cm'", "expected number, got boolean true"],
    ),
    (
        "null in a list",
        _rows([5.1, 3.5, None, 0.2]),
        ["instance 1, feature 'petal_length_cm'", "required feature is null"],
    ),
    ("nested list", _rows([5.1, 3.5, [1.4], 0.2]), ["instance 1, feature 'petal_length_cm'", "got array"]),
    ("row is a number", _rows(7, index=2), ["instance 2:", "expected an object keyed by feature name or a list of 4"]),
    (
        "missing feature",
        _rows({k: v for k, v in GOOD.items() if k != "petal_width_cm"}),
        ["instance 1, feature 'petal_width_cm'", "required feature is missing"],
    ),
    ("unknown feature", _rows({**GOOD, "colour": "blue"}), ["instance 1:", "unknown feature 'colour'"]),
    (
        "NaN",
        b'{"instances": [[5.1, 3.5, 1.4, 0.2], [NaN, 3.5, 1.4, 0.2]]}',
        ["instance 1, feature 'sepal_length_cm'", "non-finite value NaN"],
    ),
    ("Infinity", b'{"instances": [[5.1, 3.5, 1.4, Infinity]]}', ["instance 0, feature 'petal_width_cm'", "Infinity"]),
    (
        "-Infinity",
        b'{"instances": [{"sepal_length_cm": -Infinity}]}',
        ["instance 0, feature 'sepal_length_cm'", "-Infinity"],
    ),
    (
        "overflowing float",
        b'{"instances": [[1e999, 3.5, 1.4, 0.2]]}',
        ["instance 0, feature 'sepal_length_cm'", "non-finite"],
    ),
    (
        "huge integer",
        b'{"instances": [[1' + b"0" * 400 + b", 3.5, 1.4, 0.2]]}",
        ["instance 0, feature 'sepal_length_cm'", "too large"],
    ),
]


@pytest.mark.parametrize(("body", "parts"), [b[1:] for b in BAD_INSTANCES], ids=[b[0] for b in BAD_INSTANCES])
async def test_bad_instance_is_422_naming_index_and_feature(iris, body: bytes, parts: list[str]) -> None:
    r = await iris.client.post("/v1/predict", content=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_instance"
    for part in parts:
        assert part in error["message"]
    assert "Traceback" not in r.text


def _validator(*types: str, **optional_defaults) -> InstanceValidator:
    specs = [InputSpec(name=f"f{i}", type=t) for i, t in enumerate(types)]
    specs += [InputSpec(name=n, type="number", required=False, default=d) for n, d in optional_defaults.items()]
    return InstanceValidator(specs)


@pytest.mark.parametrize(
    ("kind", "value", "accepted"),
    [
        ("integer", 3, 3),
        ("integer", 3.0, 3),
        ("integer", -0.0, 0),
        ("integer", 3.5, None),
        ("integer", True, None),
        ("integer", "3", None),
        ("number", 3, 3),
        ("number", 2.5, 2.5),
        ("number", False, None),
        ("boolean", True, True),
        ("boolean", 1, None),
        ("boolean", "true", None),
        ("string", "x", "x"),
        ("string", 1, None),
    ],
)
def test_type_rules(kind: str, value, accepted) -> None:
    validator = _validator(kind, "string")  # the string column keeps Python values (object array)
    if accepted is None:
        with pytest.raises(InvalidInstance, match=f"instance 0, feature 'f0': expected {kind}"):
            validator.to_array([[value, "s"]])
    else:
        cell = validator.to_array([[value, "s"]])[0, 0]
        assert cell == accepted and type(cell) is type(accepted)


def test_array_is_float64_for_numeric_inputs_and_object_otherwise() -> None:
    numeric = _validator("number", "integer", "boolean").to_array([[1.5, 2, True]])
    assert numeric.dtype == np.float64 and numeric.tolist() == [[1.5, 2.0, 1.0]]
    mixed = _validator("number", "string").to_array([[1.5, "a"]])
    assert mixed.dtype == object and mixed.tolist() == [[1.5, "a"]]


def test_optional_inputs_take_their_default_when_missing_or_null() -> None:
    validator = _validator("number", extra=7.5)
    rows = validator.to_array([{"f0": 1.0}, {"f0": 2.0, "extra": None}, {"f0": 3.0, "extra": 1.0}, [4.0, 2.0]])
    assert rows.tolist() == [[1.0, 7.5], [2.0, 7.5], [3.0, 1.0], [4.0, 2.0]]


async def test_body_over_the_limit_by_content_length_is_413(tmp_path: Path, iris_model, served) -> None:
    bundle = write_bundle(tmp_path, iris_model, max_body_bytes=200)
    async with served(bundle) as s:
        ok = await s.client.post("/v1/predict", json={"instances": [IRIS_ROWS[0]]})
        assert ok.status_code == 200
        r = await s.client.post("/v1/predict", json={"instances": [IRIS_ROWS[0]] * 20})
        assert r.status_code == 413
        assert r.json()["error"] == {"code": "payload_too_large", "message": r.json()["error"]["message"]}
        assert "the limit is 200" in r.json()["error"]["message"]


async def test_body_over_the_limit_without_content_length_is_counted_while_read(
    tmp_path: Path, iris_model, served
) -> None:
    bundle = write_bundle(tmp_path, iris_model, max_body_bytes=200)

    async def chunks():
        yield b'{"instances": ['
        for _ in range(20):
            yield b"[5.1, 3.5, 1.4, 0.2],"
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    async with served(bundle) as s:
        r = await s.client.post("/v1/predict", content=chunks())
        assert "content-length" not in r.request.headers
        assert r.status_code == 413
        assert "over the limit of 200 bytes" in r.json()["error"]["message"]


async def test_invalid_content_length_is_400(iris) -> None:
    r = await iris.client.post("/v1/predict", content=b"{}", headers={"content-length": "lots"})
    assert r.status_code == 400 and "invalid Content-Length" in r.json()["error"]["message"]


async def test_unknown_route_and_wrong_method_are_json(iris) -> None:
    missing = await iris.client.get("/v2/predict")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await iris.client.get("/v1/predict")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


ENCODED = '''
import numpy as np

class Sum:
    """Regression: the sum of the (encoded) inputs; records the array's dtype."""
    def __init__(self):
        self.dtypes = []

    def predict(self, X):
        self.dtypes.append(X.dtype)
        return X.sum(axis=1)
'''


async def test_rename_ignore_and_categories(tmp_path: Path, served) -> None:
    schema_inputs = [
        {"name": "size", "type": "number", "required": True, "default": None},
        {"name": "colour", "type": "string", "required": False, "default": "red"},
    ]
    settings = {
        "preprocessing": {
            "rename": {"Size (cm)": "size"},
            "ignore": ["id"],
            "categories": {"colour": ["red", "green", "blue"]},
        }
    }
    bundle = write_bundle(
        tmp_path, ENCODED, class_name="Sum", task="regression", inputs_=schema_inputs, settings=settings
    )
    async with served(bundle) as s:
        ok = await s.client.post(
            "/v1/predict",
            json={"instances": [{"Size (cm)": 2.0, "colour": "blue", "id": 7}, {"Size (cm)": 1.0}, [5.0, "green"]]},
        )
        old_name = await s.client.post("/v1/predict", json={"instances": [{"size": 2.0}]})
        unknown = await s.client.post("/v1/predict", json={"instances": [[1.0, "red"], [1.0, "pink"]]})
        doc = (await s.client.get("/openapi.json")).json()
        model = s.app.state.pipeline.modules[1].estimator
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"predictions": [{"prediction": 4.0}, {"prediction": 1.0}, {"prediction": 6.0}]}
    assert model.dtypes == [np.dtype(np.float64)]
    assert old_name.status_code == 422 and "unknown feature 'size'" in old_name.json()["error"]["message"]
    assert unknown.status_code == 422
    assert unknown.json()["error"]["message"] == (
        "instance 1, feature 'colour': unknown category 'pink' (known: 'red', 'green', 'blue')"
    )
    row = doc["components"]["schemas"]["PredictRequest"]["properties"]["instances"]["items"]["oneOf"][0]
    assert list(row["properties"]) == ["Size (cm)", "colour", "id"] and row["required"] == ["Size (cm)"]
    assert row["properties"]["colour"]["enum"] == ["red", "green", "blue"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"rename": {"a": "nope"}}, "preprocessing.rename: 'nope' is not an input"),
        ({"categories": {"size": ["x"]}}, "preprocessing.categories: 'size' is not a string input"),
        ({"categories": {"colour": ["green"]}}, "preprocessing.categories.colour: the default 'red' is not a category"),
        ({"ignore": ["size"]}, "request keys must be unique and not ignored: ['size']"),
        (
            {"scale": {"colour": {"center": 1, "scale": 2}}},
            "preprocessing.scale: 'colour' is not a number or integer input",
        ),
        ({"scale": {"weight": {"scale": 2}}}, "preprocessing.scale: 'weight' is not a number or integer input"),
        ({"scale": {"size": {"scale": 0}}}, "modules.0.settings.scale.size.scale: Input should be greater than 0"),
        (
            {"scale": {"size": {"center": "nan"}}},
            "modules.0.settings.scale.size.center: Input should be a finite number",
        ),
    ],
)
def test_bad_preprocessing_settings_are_refused(tmp_path: Path, settings: dict, expected: str) -> None:
    from prometheus_client import CollectorRegistry

    from serving.app import create_app
    from serving.errors import BundleError
    from serving.spec import load_spec

    schema_inputs = [
        {"name": "size", "type": "number", "required": True, "default": None},
        {"name": "colour", "type": "string", "required": False, "default": "red"},
    ]
    bundle = write_bundle(
        tmp_path,
        ENCODED,
        class_name="Sum",
        task="regression",
        inputs_=schema_inputs,
        settings={"preprocessing": settings},
    )
    with pytest.raises(BundleError, match=re.escape(expected)):
        create_app(load_spec(bundle), bundle, CollectorRegistry())


def test_list_rows_may_leave_out_trailing_optional_inputs() -> None:
    validator = InstanceValidator(
        [
            InputSpec(name="a", type="number"),
            InputSpec(name="b", type="number", required=False, default=0.5),
            InputSpec(name="c", type="string", required=False, default="n/a"),
        ]
    )
    assert validator.row(0, [1.0]) == [1.0, 0.5, "n/a"]
    assert validator.row(0, [1.0, 2.0]) == [1.0, 2.0, "n/a"]
    assert validator.row(0, [1.0, 2.0, "x"]) == [1.0, 2.0, "x"]
    for short_or_long in ([], [1.0, 2.0, "x", 4]):
        with pytest.raises(InvalidInstance, match=r"expected 1 to 3 values in schema order \(a, b, c\)"):
            validator.row(0, short_or_long)
