"""KServe v1 (TensorFlow Serving's row format) bodies <-> the chain's rows and predictions.

Request ``{"instances": [row, ...]}`` (or ``"inputs"``), rows as lists in schema order or objects
keyed by feature name, as on ``/v1/predict``; the response ``{"predictions": [...]}`` holds one
value per instance when the response has one field (as KServe's sklearn server answers), else an
object per instance keyed by output name.
"""

from __future__ import annotations

from typing import Any

from serving import jsonio
from serving.modules.instances import describe
from serving.oip import ProtocolError, load_object


def decode_v1(body: bytes) -> list[Any]:
    """KServe v1 predict: the non-empty ``instances`` (or ``inputs``) list of rows."""
    payload = load_object(body)
    instances = payload.get("instances")
    if len(payload) == 1 and type(instances) is list and instances:
        return instances
    keys = [k for k in ("instances", "inputs") if k in payload]
    unknown = sorted(set(payload) - {"instances", "inputs", "parameters"})
    if len(keys) != 1 or unknown:
        raise ProtocolError(
            'expected {"instances": [row, ...]} (or "inputs")'
            + (f"; unknown key(s) {', '.join(map(repr, unknown))}" if unknown else "")
        )
    instances = payload[keys[0]]
    if type(instances) is not list or not instances:
        raise ProtocolError(f"'{keys[0]}' must be a non-empty list of rows, got {describe(instances)}")
    return instances


def encode_v1(predictions: list[dict[str, Any]]) -> bytes:
    if predictions and len(predictions[0]) == 1:
        (key,) = predictions[0]
        return jsonio.dumps({"predictions": [p[key] for p in predictions]})
    return jsonio.dumps({"predictions": predictions})
