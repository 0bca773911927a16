"""Open Inference Protocol (KServe v2 REST) and KServe v1 conformance on our side: every v2
endpoint and its error cases, datatypes (FP32, FP64, INT64, BOOL, BYTES), shapes, batches of
rows, the protocol's error body, the chain and metrics behind them, KServe v1 predict, and a
client written for the protocol (open-inference-openapi) calling us unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_bundles import IRIS_FEATURES, IRIS_ROWS, write_bundle

pytestmark = pytest.mark.anyio

INFER = "/v2/models/iris/infer"


def columns(rows: list[list[float]], datatype: str = "FP64", names: list[str] = IRIS_FEATURES) -> list[dict]:
    return [
        {"name": n, "shape": [len(rows)], "datatype": datatype, "data": [r[i] for r in rows]}
        for i, n in enumerate(names)
    ]


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


async def test_health_and_server_metadata(iris) -> None:
    live, ready, server = [await iris.client.get(p) for p in ("/v2/health/live", "/v2/health/ready", "/v2")]
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert server.status_code == 200
    assert server.json()["name"] == "mlops-serving" and server.json()["extensions"] == []
    iris.app.state.serving.start_draining()
    assert_error(await iris.client.get("/v2/health/ready"), 503, "draining")
    assert_error(await iris.client.get("/v2/models/iris/ready"), 503, "draining")
    assert (await iris.client.get("/v2/health/live")).status_code == 200


async def test_model_metadata_from_the_schema(iris) -> None:
    r = await iris.client.get("/v2/models/iris")
    assert r.status_code == 200
    assert r.json() == {
        "name": "iris",
        "versions": ["1"],
        "platform": "mlops",
        "inputs": [{"name": n, "datatype": "FP64", "shape": [-1]} for n in IRIS_FEATURES],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probability", "datatype": "FP64", "shape": [-1]},
        ],
    }
    assert (await iris.client.get("/v2/models/iris/versions/1")).json() == r.json()
    for path in ("/v2/models/iris/ready", "/v2/models/iris/versions/1/ready"):
        ready = await iris.client.get(path)
        assert (ready.status_code, ready.json()) == (200, {"name": "iris", "ready": True})


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/wine",
        "/v2/models/wine/ready",
        "/v2/models/iris/versions/2",
        "/v2/models/iris/versions/2/ready",
        "/v1/models/wine",
    ],
)
async def test_unknown_model_or_version_is_404(iris, path: str) -> None:
    assert_error(await iris.client.get(path), 404, "not found" if "wine" in path else "no version '2'")


@pytest.mark.parametrize(
    "path", ["/v2/models/wine/infer", "/v2/models/iris/versions/7/infer", "/v1/models/wine:predict"]
)
async def test_infer_on_an_unknown_model_is_404(iris, path: str) -> None:
    assert_error(await iris.client.post(path, json={"inputs": columns(IRIS_ROWS)}), 404)


async def test_named_tensors_give_the_predictions_of_v1_predict(iris) -> None:
    v1 = (await iris.client.post("/v1/predict", json={"instances": IRIS_ROWS})).json()["predictions"]
    r = await iris.client.post(INFER, json={"id": "req-7", "inputs": columns(IRIS_ROWS)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1", "req-7")
    assert body["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [3], "data": [p["label"] for p in v1]},
        {"name": "probability", "datatype": "FP64", "shape": [3], "data": [p["probability"] for p in v1]},
    ]
    assert body["outputs"][0]["data"] == ["setosa", "virginica", "versicolor"]
    versioned = await iris.client.post(
        "/v2/models/iris/versions/1/infer", json={"id": "req-7", "inputs": columns(IRIS_ROWS)}
    )
    assert versioned.json() == body


async def test_one_2d_tensor_flat_or_nested_and_n_by_1_columns(iris) -> None:
    nested = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": IRIS_ROWS}]}
    flat = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": [v for r in IRIS_ROWS for v in r]}]}
    n_by_1 = {"inputs": [{**t, "shape": [3, 1], "data": [[v] for v in t["data"]]} for t in columns(IRIS_ROWS)]}
    ints = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [[5, 3, 1, 0]]}]}
    answers = [await iris.client.post(INFER, json=b) for b in (nested, flat, n_by_1, ints)]
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    labels = [a.json()["outputs"][0]["data"] for a in answers]
    assert labels[:3] == [["setosa", "virginica", "versicolor"]] * 3 and labels[3] == ["setosa"]


async def test_id_is_generated_when_absent_and_outputs_select(iris) -> None:
    one = (await iris.client.post(INFER, json={"inputs": columns(IRIS_ROWS[:1])})).json()
    two = (await iris.client.post(INFER, json={"inputs": columns(IRIS_ROWS[:1])})).json()
    assert one["id"] and two["id"] and one["id"] != two["id"]
    picked = await iris.client.post(
        INFER,
        json={"inputs": columns(IRIS_ROWS), "outputs": [{"name": "probability"}], "parameters": {"content_type": "np"}},
    )
    assert [o["name"] for o in picked.json()["outputs"]] == ["probability"]
    assert_error(
        await iris.client.post(INFER, json={"inputs": columns(IRIS_ROWS), "outputs": [{"name": "proba"}]}),
        400,
        "unknown output 'proba'",
    )


def _tensor(**change) -> dict:
    return {"inputs": [{**t, **change} if t["name"] == "petal_width_cm" else t for t in columns(IRIS_ROWS)]}


@pytest.mark.parametrize(
    "body, fragments",
    [
        (_tensor(name="petal_width"), ["unknown input 'petal_width'", "petal_width_cm"]),
        (_tensor(shape=[2]), ["shape [2] holds 2 values, data has 3"]),
        (_tensor(shape=[3, 2]), ["shape must be [N] or [N, 1]"]),
        (_tensor(shape=[4], data=[1.0, 2.0, 3.0, 4.0]), ["has 4 rows, the inputs before it 3"]),
        (_tensor(datatype="BYTES", data=["a", "b", "c"]), ["datatype BYTES does not fit a number input", "FP64"]),
        (_tensor(datatype="FP128"), ["unknown datatype 'FP128'"]),
        # float tensors of number inputs: the chain checks the values (as on /v1/predict)
        (_tensor(data=[1.0, "2", 3.0]), ["instance 1, feature 'petal_width_cm': expected number, got string '2'"]),
        (_tensor(data=[1.0, True, 3.0]), ["instance 1, feature 'petal_width_cm': expected number, got boolean true"]),
        (_tensor(shape=[3, 1], data=[1.0, True, 3.0]), ["boolean true is not a FP64 value"]),
        (_tensor(datatype="BOOL", data=[True, False, True]), ["datatype BOOL does not fit a number input"]),
        (_tensor(datatype="INT8", data=[1, 300, 2]), ["300 is out of range for INT8"]),
        (_tensor(datatype="INT64", data=[1, 2.5, 2]), ["number 2.5 is not a INT64 value"]),
        (_tensor(shape=[3, 1], data=[[1.0], [2.0, 3.0], [4.0]]), ["nested data does not match shape [3, 1]"]),
        (_tensor(data=[[1.0], [2.0], [4.0]]), ["instance 0, feature 'petal_width_cm': expected number, got array"]),
        (_tensor(shape=[0], data=[]), ["has 0 rows"]),
        (_tensor(data="1,2,3"), ["data must be a list"]),
        ({"inputs": columns(IRIS_ROWS)[:3]}, ["missing input 'petal_width_cm'"]),
        ({"inputs": columns(IRIS_ROWS) + columns(IRIS_ROWS)[:1]}, ["input 'sepal_length_cm' is given twice"]),
        (
            {"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP64", "data": [r[:3] for r in IRIS_ROWS]}]},
            ["unknown input 'x'", "shape [N, 4]"],
        ),
        (
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": IRIS_ROWS}]},
            ["nested data does not match shape [2, 4]"],
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1.0, 2.0]}]},
            ["shape [1, 4] holds 4 values, data has 2"],
        ),
        ({"inputs": [{"name": "sepal_length_cm", "shape": [1], "data": [1.0]}]}, ["missing datatype"]),
        ({"inputs": [{**columns(IRIS_ROWS)[0], "dtype": "FP64"}]}, ["unknown key(s) dtype"]),
        ({"inputs": []}, ["'inputs' must be a non-empty list"]),
        ({"instances": IRIS_ROWS}, ["unknown key(s) 'instances'"]),
        ({"inputs": columns(IRIS_ROWS), "id": 7}, ["'id' must be a string"]),
        ({"inputs": columns(IRIS_ROWS), "parameters": []}, ["'parameters' must be an object"]),
        ({"inputs": [{**columns(IRIS_ROWS)[0], "shape": [-1]}]}, ["shape must be a list of non-negative integers"]),
        # JSON of the wrong kind anywhere (found by fuzzing the OpenAPI document): 400, never 500
        ({"inputs": [{"data": [], "datatype": {}, "name": "", "shape": [0, 0]}]}, ["unknown datatype {}"]),
        (_tensor(datatype=["FP64"]), ["unknown datatype ['FP64']"]),
        ({"inputs": [{**columns(IRIS_ROWS)[0], "name": ["a"]}]}, ["inputs[0].name must be a string"]),
        ({"inputs": [5]}, ["inputs[0] must be an object"]),
        ({"inputs": columns(IRIS_ROWS), "outputs": [{"name": ["label"]}]}, ["unknown output ['label']"]),
        ({"inputs": columns(IRIS_ROWS), "outputs": "label"}, ["'outputs' must be a list"]),
    ],
)
async def test_wrong_names_shapes_and_datatypes_are_400_with_the_protocol_error(iris, body, fragments) -> None:
    assert_error(await iris.client.post(INFER, json=body), 400, *fragments)


async def test_malformed_bodies_and_values_the_chain_refuses_are_400(iris) -> None:
    assert_error(await iris.client.post(INFER, content=b"{"), 400, "malformed JSON")
    assert_error(await iris.client.post(INFER, content=b""), 400, "empty request body")
    assert_error(await iris.client.post(INFER, content=b"[1]"), 400, "expected a JSON object")
    nan = json.dumps({"inputs": columns([[float("nan"), 1.0, 1.0, 1.0]])}).encode()  # NaN token: not JSON
    assert_error(await iris.client.post(INFER, content=nan), 400, "instance 0, feature 'sepal_length_cm'", "non-finite")


async def test_the_binary_tensor_extension_is_refused_by_name(iris) -> None:
    header = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
    ).encode()
    body = header + b"\x00" * 16
    r = await iris.client.post(INFER, content=body, headers={"inference-header-content-length": str(len(header))})
    assert_error(r, 400, "binary tensor data extension is not supported")


MIXED = '''
class Mixed:
    """Regression: x + n + 10 * flag + len(word) + w, from an object array."""
    def predict(self, X):
        return [float(r[0]) + r[1] + 10.0 * r[2] + len(r[3]) + r[4] for r in X]
'''
MIXED_INPUTS = [
    {"name": "x", "type": "number", "required": True, "default": None},
    {"name": "n", "type": "integer", "required": True, "default": None},
    {"name": "flag", "type": "boolean", "required": True, "default": None},
    {"name": "word", "type": "string", "required": True, "default": None},
    {"name": "w", "type": "number", "required": False, "default": 0.5},
]


async def test_datatypes_fp32_int64_bool_bytes_and_an_omitted_optional_input(tmp_path: Path, served) -> None:
    bundle = write_bundle(tmp_path, MIXED, name="mixed", class_name="Mixed", task="regression", inputs_=MIXED_INPUTS)
    body = {
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2.0]},
            {"name": "n", "shape": [2, 1], "datatype": "INT64", "data": [[3], [4]]},
            {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            {"name": "word", "shape": [2], "datatype": "BYTES", "data": ["ab", "abcd"]},
        ]
    }
    async with served(bundle) as s:
        meta = (await s.client.get("/v2/models/mixed")).json()
        r = await s.client.post("/v2/models/mixed/infer", json=body)
        with_w = await s.client.post(
            "/v2/models/mixed/infer",
            json={"inputs": [*body["inputs"], {"name": "w", "shape": [2], "datatype": "INT32", "data": [1, 2]}]},
        )
        fp_for_int = await s.client.post(
            "/v2/models/mixed/infer",
            json={
                "inputs": [
                    {**t, "datatype": "FP64", "data": [3.0, 4.0], "shape": [2]} if t["name"] == "n" else t
                    for t in body["inputs"]
                ]
            },
        )
        matrix = await s.client.post(
            "/v2/models/mixed/infer",
            json={"inputs": [{"name": "m", "shape": [1, 5], "datatype": "FP64", "data": [1.0, 2.0, 1.0, 2.0, 0.0]}]},
        )
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("x", "FP64"),
        ("n", "INT64"),
        ("flag", "BOOL"),
        ("word", "BYTES"),
        ("w", "FP64"),
    ]
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [
        {
            "name": "prediction",
            "datatype": "FP64",
            "shape": [2],
            "data": [1.5 + 3 + 10 + 2 + 0.5, 2.0 + 4 + 0 + 4 + 0.5],
        }
    ]
    assert with_w.json()["outputs"][0]["data"] == [1.5 + 3 + 10 + 2 + 1, 2.0 + 4 + 0 + 4 + 2]
    assert_error(fp_for_int, 400, "input 'n': datatype FP64 does not fit a integer input (use INT64)")
    assert_error(matrix, 400, "does not fit integer input 'n'", "one tensor per input")


async def test_a_batch_of_rows_passes_the_chain_and_metrics_with_a_route_label(iris) -> None:
    rows = IRIS_ROWS * 4
    r = await iris.client.post(INFER, json={"inputs": columns(rows)})
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [12]
    await iris.client.post("/v1/models/iris:predict", json={"instances": rows})
    await iris.client.post(INFER, json={"inputs": columns(rows, names=["a", "b", "c", "d"])})
    await iris.client.get("/v2/models/iris")
    text = (await iris.client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }

    def requests(route: str, status: str, method: str = "POST") -> float:
        return samples.get(("mlops_http_requests_total", (("method", method), ("route", route), ("status", status))), 0)

    assert requests("/v2/models/{name}/infer", "200") == 1
    assert requests("/v2/models/{name}/infer", "400") == 1
    assert requests("/v1/models/{name}:predict", "200") == 1
    assert requests("/v2/models/{name}", "200", "GET") == 1
    assert samples[("mlops_predictions_total", (("label", "setosa"),))] == 8  # 4 from each protocol
    assert samples[("mlops_module_duration_seconds_count", (("module", "preprocessing"),))] == 2


async def test_kserve_v1_model_and_predict(iris, tmp_path: Path, iris_model, served) -> None:
    objects = [dict(zip(IRIS_FEATURES, row)) for row in IRIS_ROWS]
    model = await iris.client.get("/v1/models/iris")
    rows = await iris.client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    as_objects = await iris.client.post("/v1/models/iris:predict", json={"instances": objects})
    as_inputs = await iris.client.post("/v1/models/iris:predict", json={"inputs": IRIS_ROWS})
    v1 = await iris.client.post("/v1/predict", json={"instances": IRIS_ROWS})
    assert (model.status_code, model.json()) == (200, {"name": "iris", "ready": True})
    assert rows.status_code == 200 and rows.json() == as_objects.json() == as_inputs.json() == v1.json()
    assert_error(await iris.client.post("/v1/models/iris:predict", json={"instances": []}), 400, "non-empty list")
    assert_error(
        await iris.client.post("/v1/models/iris:predict", json={"rows": IRIS_ROWS}), 400, "unknown key(s) 'rows'"
    )
    assert_error(
        await iris.client.post("/v1/models/iris:predict", json={"instances": [[1.0, 2.0]]}),
        400,
        "instance 0: expected 4 values",
    )
    # one output: one plain value per instance, as KServe's sklearn server answers
    bundle = write_bundle(tmp_path, iris_model, outputs=[{"name": "label", "type": "integer"}])
    async with served(bundle) as s:
        plain = await s.client.post("/v1/models/iris:predict", json={"instances": IRIS_ROWS})
    assert plain.json() == {"predictions": [0, 2, 1]}


async def test_the_request_exactly_as_kserve_documents_it(iris) -> None:
    """The sklearn iris example of KServe's v2 docs (and the matching v1 one), byte for byte."""
    v2 = b"""{
  "inputs": [
    {
      "name": "input-0",
      "shape": [2, 4],
      "datatype": "FP32",
      "data": [
        [6.8, 2.8, 4.8, 1.4],
        [6.0, 3.4, 4.5, 1.6]
      ]
    }
  ]
}"""
    headers = {"content-type": "application/json"}
    r = await iris.client.post("/v2/models/iris/infer", content=v2, headers=headers)
    assert r.status_code == 200, r.text
    label = next(o for o in r.json()["outputs"] if o["name"] == "label")
    assert label["shape"] == [2] and label["data"] == ["versicolor", "versicolor"]
    v1 = await iris.client.post(
        "/v1/models/iris:predict",
        headers=headers,
        content=b'{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}',
    )
    assert [p["label"] for p in v1.json()["predictions"]] == ["versicolor", "versicolor"]


async def test_a_client_written_for_the_protocol_calls_us_unchanged(iris) -> None:
    from open_inference.openapi import BadRequestError, InferenceRequest, RequestInput
    from open_inference.openapi.client import AsyncOpenInferenceClient

    client = AsyncOpenInferenceClient(base_url="http://serving.test", httpx_client=iris.client)
    await client.check_server_liveness()
    await client.check_server_readiness()
    await client.check_model_readiness("iris")
    await client.check_model_version_readiness("iris", "1")
    assert (await client.read_server_metadata()).name == "mlops-serving"
    meta = await client.read_model_metadata("iris")
    assert [t.name for t in meta.inputs] == IRIS_FEATURES and {t.datatype for t in meta.inputs} == {"FP64"}
    request = InferenceRequest(
        id="c-1",
        inputs=[
            RequestInput(name=n, shape=[3], datatype="FP64", data=[r[i] for r in IRIS_ROWS])
            for i, n in enumerate(IRIS_FEATURES)
        ],
    )
    answer = await client.model_infer("iris", request=request)
    assert answer.model_name == "iris" and answer.id == "c-1"
    assert answer.outputs[0].name == "label" and answer.outputs[0].data.__root__ == [
        "setosa",
        "virginica",
        "versicolor",
    ]
    versioned = await client.model_version_infer("iris", "1", request=request)
    assert versioned.outputs[1].data.__root__ == answer.outputs[1].data.__root__
    wrong = InferenceRequest(inputs=[RequestInput(name="petals", shape=[1, 3], datatype="FP64", data=[1.0, 2.0, 3.0])])
    with pytest.raises(BadRequestError) as raised:
        await client.model_infer("iris", request=wrong)
    assert "unknown input 'petals'" in raised.value.body["error"]


async def test_openapi_lists_both_protocols(iris) -> None:
    doc = (await iris.client.get("/openapi.json")).json()
    assert set(doc["paths"]) >= {
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v1/models/{name}",
        "/v1/models/{name}:predict",
    }
    tensors = doc["components"]["schemas"]["InferRequest"]["properties"]["inputs"]["items"]["oneOf"]
    assert [t["properties"]["name"].get("enum") for t in tensors[:4]] == [[n] for n in IRIS_FEATURES]
    assert tensors[0]["properties"]["datatype"]["enum"][:3] == ["FP16", "FP32", "FP64"]
    assert tensors[4]["properties"]["name"] == {"type": "string", "not": {"enum": IRIS_FEATURES}}


async def test_outlier_annotation_reject_body_limit_and_not_ready(tmp_path: Path, iris_model, served) -> None:
    from serving_bundles import IRIS_LABELS, iris_reference

    chain = ["preprocessing", "outlier", "model", "postprocessing"]
    annotate = write_bundle(
        tmp_path / "a",
        iris_model,
        labels=IRIS_LABELS,
        modules=chain,
        reference=iris_reference(),
        settings={"outlier": {"action": "annotate", "method": "iqr", "threshold": 1.5}},
    )
    rows = [[5.1, 3.5, 1.4, 0.2], [5.1, 9.0, 40.0, 0.2]]
    async with served(annotate) as s:
        meta = (await s.client.get("/v2/models/iris")).json()
        r = await s.client.post(INFER, json={"inputs": columns(rows)})
    assert meta["outputs"][-1] == {"name": "outliers", "datatype": "BYTES", "shape": [-1]}
    outliers = r.json()["outputs"][-1]
    assert outliers["name"] == "outliers" and outliers["shape"] == [2]
    assert [json.loads(v) for v in outliers["data"]] == [[], ["sepal_width_cm", "petal_length_cm"]]
    reject = write_bundle(
        tmp_path / "r",
        iris_model,
        labels=IRIS_LABELS,
        modules=chain,
        reference=iris_reference(),
        settings={"outlier": {"action": "reject"}},
        max_body_bytes=2000,
    )
    async with served(reject) as s:
        refused = await s.client.post(INFER, json={"inputs": columns(rows)})
        too_big = await s.client.post(INFER, json={"inputs": columns(IRIS_ROWS * 60)})
        s.app.state.serving.ready = False
        not_ready = await s.client.post(INFER, json={"inputs": columns(rows)})
        v1_not_ready = await s.client.get("/v1/models/iris")
        s.app.state.serving.ready = True
    assert_error(refused, 400, "instance 1: outlier: 'sepal_width_cm', 'petal_length_cm' outside")
    assert_error(too_big, 413, "the limit is 2000")
    assert_error(not_ready, 503, "not loaded yet")
    assert (v1_not_ready.status_code, v1_not_ready.json()) == (503, {"name": "iris", "ready": False})


async def test_protocol_routes_share_the_servers_byte_budget(iris) -> None:
    """Issue 10's admission control covers every predict route: with the in-flight byte budget spent,
    v2 infer and KServe v1 predict shed with 503 + Retry-After (the protocol's error body), as
    /v1/predict does, and all answer again once the bytes are released."""
    budget = iris.app.state.budget
    body = {"inputs": columns(IRIS_ROWS[:1])}
    spent = budget.limit - budget.used
    budget.acquire(spent)  # what other requests in flight hold
    try:
        for path, payload in (
            ("/v2/models/iris/infer", body),
            ("/v2/models/iris/versions/1/infer", body),
            ("/v1/models/iris:predict", {"instances": IRIS_ROWS[:1]}),
        ):
            r = await iris.client.post(path, json=payload)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", (path, r.text)
            assert set(r.json()) == {"error"}
        assert (await iris.client.post("/v1/predict", json={"instances": IRIS_ROWS[:1]})).status_code == 503
    finally:
        budget.release(spent)
    assert budget.used == 0
    r = await iris.client.post("/v2/models/iris/infer", json=body)
    assert r.status_code == 200 and budget.used == 0  # held until sent, then given back
