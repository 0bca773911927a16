"""smoke-test over the Open Inference Protocol (``smoke.protocol: v2``): each request the smoke test
would send to ``/v1/predict`` goes to ``/v2/models/{name}/infer`` as named tensors (one per input,
datatype from the schema type), and a 200 answer comes back as ``{"predictions": [...]}`` (one
object per row, from the output tensors) for the same checks. A body that cannot be turned into
tensors (malformed JSON) is sent as it is; rows that do not fit the schema become one 2-D tensor
or a tensor under an unknown name, which the server must refuse with 4xx just the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from serving.spec import InputSpec, load_spec

DATATYPE_OF = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}


def served_name(bundle: Path, fallback: str) -> str:
    """The model name the server answers to (the bundle's spec), else ``fallback``."""
    try:
        return load_spec(bundle).model.name
    except (OSError, ValueError, ValidationError):
        return fallback


def to_v2(body: bytes, inputs: list[InputSpec]) -> bytes:
    """A v1 predict body as a v2 infer body; unchanged when it is not a JSON object with a list."""
    try:
        rows = json.loads(body)["instances"]
    except (ValueError, KeyError, TypeError):
        return body
    if not isinstance(rows, list):
        return body
    names = [f.name for f in inputs]
    if any(isinstance(r, list) and len(r) != len(names) for r in rows):  # does not fit: one 2-D tensor
        return json.dumps(
            {"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}]}
        ).encode()
    objects = [dict(zip(names, r)) if isinstance(r, list) else r for r in rows]
    keys = list(dict.fromkeys(k for o in objects if isinstance(o, dict) for k in o))
    types = {f.name: f.type for f in inputs}
    defaults = {f.name: f.default for f in inputs}  # the protocol has no null

    def value(row: Any, key: str) -> Any:
        got = row.get(key) if isinstance(row, dict) else row
        return defaults.get(key) if got is None else got

    tensors = [
        {
            "name": k,
            "shape": [len(objects)],
            "datatype": DATATYPE_OF.get(types.get(k, "number"), "FP64"),
            "data": [value(o, k) for o in objects],
        }
        for k in keys
    ]
    return json.dumps({"inputs": tensors}, allow_nan=True).encode()


def from_v2(answer: Any) -> dict[str, Any]:
    """A v2 infer response as ``{"predictions": [{output: value, ...}, ...]}``."""
    tensors = answer.get("outputs") if isinstance(answer, dict) else None  # the response's tensors
    if not isinstance(tensors, list):
        return {"problem": "the v2 response has no 'outputs' list"}
    columns = {o.get("name"): o.get("data") for o in tensors if isinstance(o, dict)}
    count = max((len(c) for c in columns.values() if isinstance(c, list)), default=0)
    return {
        "predictions": [
            {name: data[i] for name, data in columns.items() if isinstance(data, list) and i < len(data)}
            for i in range(count)
        ]
    }


def post(client: httpx.Client, name: str, body: bytes, inputs: list[InputSpec]) -> httpx.Response:
    """POST ``body`` (a v1 predict body) as a v2 infer request; a 200 answer reads as v1's shape."""
    resp = client.post(f"/v2/models/{name}/infer", content=to_v2(body, inputs))
    if resp.status_code != 200:
        return resp
    try:
        answer = resp.json()
    except ValueError:
        return resp
    return httpx.Response(200, json=from_v2(answer), request=resp.request)
