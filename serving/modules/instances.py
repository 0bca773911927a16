"""Request bodies and instances: decoding, type checks and the exact 400/422 messages.

Used by the preprocessing module (see its docstring for the rules).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from serving import jsonio
from serving.errors import BadRequest, InvalidInstance, TooManyInstances
from serving.spec import InputSpec

_MISSING = object()
_EXPECTED_BODY = 'expected a JSON object {"instances": [row, ...]}'


class Reject(Exception):
    """A value that does not fit its input type; the message says why."""


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value[:40]!r}" if len(value) <= 40 else f"string {value[:40]!r}..."
    return "array" if isinstance(value, list) else "object"


def _finite(value: float) -> float:
    if math.isfinite(value):
        return value
    token = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    raise Reject(f"non-finite value {token} is not allowed")


def _number(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return _finite(value)
    if kind is int:
        try:
            float(value)
        except OverflowError:
            raise Reject("number is too large for a 64-bit float") from None
        return value
    raise Reject(f"expected number, got {describe(value)}")


def _integer(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return _number(value)
    if kind is float:
        _finite(value)
        if value.is_integer():
            return int(value)
    raise Reject(f"expected integer, got {describe(value)}")


def _string(value: Any) -> Any:
    if type(value) is str:
        return value
    raise Reject(f"expected string, got {describe(value)}")


def _boolean(value: Any) -> Any:
    if type(value) is bool:
        return value
    raise Reject(f"expected boolean, got {describe(value)}")


CHECKS: dict[str, Callable[[Any], Any]] = {
    "number": _number,
    "integer": _integer,
    "string": _string,
    "boolean": _boolean,
}


def decode_instances(body: bytes | list[Any], max_rows: int | None = None) -> list[Any]:
    """Parse the body and return its non-empty ``instances`` list, or raise BadRequest
    (TooManyInstances over ``max_rows``).

    A list is instances a protocol adapter (:mod:`serving.oip`) already decoded and checked."""
    if isinstance(body, list):
        if max_rows is not None and len(body) > max_rows:
            raise TooManyInstances(
                f"{len(body)} instances in one request; the limit is {max_rows} (server.max_rows): split the request"
            )
        return body
    if not body or body.isspace():  # (not strip(): that copies a bytearray body)
        raise BadRequest(f"empty request body; {_EXPECTED_BODY}")
    try:
        payload = jsonio.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"{_EXPECTED_BODY}, got {describe(payload)}")
    if "instances" not in payload:
        raise BadRequest(f"missing 'instances'; {_EXPECTED_BODY}")
    unknown = sorted(k for k in payload if k != "instances")
    if unknown:
        raise BadRequest(f"unknown key(s) {', '.join(map(repr, unknown))}; {_EXPECTED_BODY}")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise BadRequest(f"'instances' must be a list of rows, got {describe(instances)}")
    if not instances:
        raise BadRequest("'instances' is empty; send at least one row")
    if max_rows is not None and len(instances) > max_rows:
        raise TooManyInstances(
            f"{len(instances)} instances in one request; the limit is {max_rows} (server.max_rows): split the request"
        )
    return instances


class InstanceValidator:
    """Checks rows against the input schema and builds the model's 2-D array.

    ``keys`` ({input name: request key}) renames features in object rows; request keys in
    ``ignore`` are accepted in object rows and dropped."""

    def __init__(self, inputs: list[InputSpec], keys: dict[str, str] | None = None, ignore: Any = ()):
        keys = keys or {}
        self.fields = [(keys.get(f.name, f.name), CHECKS[f.type], f.required, f.default) for f in inputs]
        self.names = {spec[0] for spec in self.fields}
        self.ignore = frozenset(ignore)
        self.dtype = np.float64 if all(f.type != "string" for f in inputs) else object
        self._order = ", ".join(spec[0] for spec in self.fields)
        # A list row may leave out trailing optional inputs: a model that adds an optional input at
        # the end keeps the clients that send lists working.
        self.min_width = len(self.fields)
        while self.min_width and not self.fields[self.min_width - 1][2]:
            self.min_width -= 1

    def to_array(self, instances: list[Any]) -> np.ndarray:
        rows = [self.row(i, row) for i, row in enumerate(instances)]
        return np.array(rows, dtype=self.dtype)

    def row(self, index: int, row: Any) -> list[Any]:
        if isinstance(row, dict):
            return self._from_object(index, row)
        if isinstance(row, list):
            return self._from_list(index, row)
        raise InvalidInstance(
            f"instance {index}: expected an object keyed by feature name or a list of "
            f"{len(self.fields)} values in schema order, got {describe(row)}"
        )

    def _from_list(self, index: int, row: list[Any]) -> list[Any]:
        if not self.min_width <= len(row) <= len(self.fields):
            expected = (
                f"{len(self.fields)}"
                if self.min_width == len(self.fields)
                else f"{self.min_width} to {len(self.fields)}"
            )
            raise InvalidInstance(
                f"instance {index}: expected {expected} values in schema order ({self._order}), got {len(row)}"
            )
        padded = row + [_MISSING] * (len(self.fields) - len(row))
        return [self._value(index, spec, value) for spec, value in zip(self.fields, padded)]

    def _from_object(self, index: int, row: dict[str, Any]) -> list[Any]:
        for key in row:
            if key not in self.names and key not in self.ignore:
                raise InvalidInstance(f"instance {index}: unknown feature {key!r} (inputs: {self._order})")
        return [self._value(index, spec, row.get(spec[0], _MISSING)) for spec in self.fields]

    @staticmethod
    def _value(index: int, spec: tuple, value: Any) -> Any:
        name, check, required, default = spec
        if value is _MISSING or value is None:
            if required:
                got = "missing" if value is _MISSING else "null"
                raise InvalidInstance(f"instance {index}, feature {name!r}: required feature is {got}")
            return default
        try:
            return check(value)
        except Reject as exc:
            raise InvalidInstance(f"instance {index}, feature {name!r}: {exc}") from None
