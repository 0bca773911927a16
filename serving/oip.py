"""Open Inference Protocol (KServe v2 REST) bodies <-> the chain's rows and predictions.

v2 infer request: ``{"id"?, "parameters"?, "inputs": [tensor, ...], "outputs"?: [{"name"}, ...]}``,
a tensor ``{"name", "shape", "datatype", "data", "parameters"?}`` with ``data`` flat (row-major)
or nested as its shape. Two layouts: one tensor per schema input, named as the input, shape
``[N]`` or ``[N, 1]`` (an optional input may be left out); or one 2-D tensor of shape ``[N, F]``
(F = the number of inputs, columns in schema order) under any name that is not an input's, as
KServe's and MLServer's sklearn runtimes take it. Datatypes: a ``number`` input takes FP16/32/64
or an integer type, ``integer`` an integer type, ``boolean`` BOOL, ``string`` BYTES (JSON strings);
every value is checked against its tensor's datatype (range included), except that the values
of float tensors over number inputs are left to the chain's number check (the same rule, named by
instance and feature; the fast path). Anything wrong with names, shapes, datatypes or the body is
a :class:`ProtocolError` (400). The rows then go through the module chain exactly as
``/v1/predict`` rows do (its 422s are 400 on these routes, see :mod:`serving.oip_routes`).

The response has one tensor per output (``schema.outputs`` and the outlier module's
``outliers`` annotation, a BYTES tensor of JSON arrays), shape ``[N]``; ``outputs`` in the
request selects some. KServe v1 bodies: :mod:`serving.kserve_v1`.
"""

from __future__ import annotations

import itertools
import operator
import uuid
from itertools import chain
from typing import Any

from serving import jsonio
from serving.errors import BadRequest
from serving.modules.instances import describe
from serving.spec import Spec

DATATYPE_OF = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}
_FLOATS = ("FP16", "FP32", "FP64")
_RANGES = {f"INT{b}": (-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)}
_RANGES.update({f"UINT{b}": (0, 2**b - 1) for b in (8, 16, 32, 64)})
DATATYPES = (*_FLOATS, *_RANGES, "BOOL", "BYTES")
_FLOAT_SET = frozenset(_FLOATS)
_LIST = {list}
_PARTS = operator.itemgetter("name", "shape", "datatype", "data")
_KINDS = {
    **{d: frozenset({float, int}) for d in _FLOATS},
    **{d: frozenset({int}) for d in _RANGES},
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
}
FITS = {
    "number": frozenset((*_FLOATS, *_RANGES)),
    "integer": frozenset(_RANGES),
    "boolean": frozenset({"BOOL"}),
    "string": frozenset({"BYTES"}),
}
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})


class ProtocolError(BadRequest):
    """400: the body does not follow the protocol (names, shapes, datatypes, keys)."""


def load_object(body: bytes) -> dict[str, Any]:
    """The body's JSON object, or a ProtocolError that says what is wrong with it."""
    try:
        payload = jsonio.loads(body)
    except (ValueError, RecursionError) as exc:
        if not body.strip():
            raise ProtocolError("empty request body; expected a JSON object") from None
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if type(payload) is not dict:
        raise ProtocolError(f"expected a JSON object, got {describe(payload)}")
    return payload


def _object(where: str, value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise ProtocolError(f"{where} must be an object, got {describe(value)}")
    return value


def check_values(where: str, datatype: str, values: list[Any]) -> None:
    """Every value fits ``datatype`` (a known one): its JSON type, and the range of an integer type.
    NaN and infinity pass here; the chain refuses them by instance and feature."""
    kinds = _KINDS[datatype]
    if not set(map(type, values)) <= kinds:
        bad = next(v for v in values if type(v) not in kinds)
        raise ProtocolError(f"{where}: {describe(bad)} is not a {datatype} value")
    if datatype in _RANGES and values:
        lo, hi = _RANGES[datatype]
        if min(values) < lo or max(values) > hi:
            bad = next(v for v in values if not lo <= v <= hi)
            raise ProtocolError(f"{where}: {bad} is out of range for {datatype}")


class V2Codec:
    """Decodes v2 infer bodies into rows for the chain and encodes its predictions as tensors."""

    def __init__(self, spec: Spec):
        self.name, self.version = spec.model.name, spec.model.version
        self.inputs = [(f.name, f.type, f.required) for f in spec.io.inputs]
        self.index = {f.name: i for i, f in enumerate(spec.io.inputs)}
        self.width = len(self.inputs)
        self.outputs = {o.name: DATATYPE_OF[o.type] for o in spec.io.outputs}
        if any(m.name == "outlier" and m.settings.get("action") == "annotate" for m in spec.modules):
            self.outputs["outliers"] = "BYTES"
        self._names = ", ".join(self.index)
        self.all_outputs = list(self.outputs)
        self._columns_of = {name: operator.itemgetter(name) for name in self.outputs}
        self.matrix_types = frozenset.intersection(*(FITS[t] for _, t, _ in self.inputs))
        self.numbers = [t == "number" for _, t, _ in self.inputs]
        # float tensors over number inputs: the chain's own number check is the datatype's check
        self.chain_checks = _FLOAT_SET if all(self.numbers) else frozenset()
        prefix = uuid.uuid4().hex[:12]
        self._ids = (f"{prefix}-{i}" for i in itertools.count(1))  # unique here, cheaper than a uuid4 each

    # -- request -------------------------------------------------------------------------------
    def decode(self, body: bytes) -> tuple[list[list[Any]], tuple[str, list[str]]]:
        """The rows (schema order), and the request id (generated when absent) with the outputs to send."""
        try:
            payload = jsonio.loads(body)
        except (ValueError, RecursionError):
            payload = None
        if type(payload) is not dict:
            payload = load_object(body)  # raises the exact error
        if len(payload) == 1:  # the common request, "inputs" alone: try the fast path first
            tensors = payload.get("inputs")
            if type(tensors) is list and len(tensors) == 1:
                rows = self._fast_matrix(tensors[0])
                if rows is not None and tensors[0]["name"] not in self.index:
                    return rows, (next(self._ids), self.all_outputs)
        return self._decode(payload)

    def _decode(self, payload: dict[str, Any]) -> tuple[list[list[Any]], tuple[str, list[str]]]:
        if not payload.keys() <= _REQUEST_KEYS:
            unknown = sorted(set(payload) - _REQUEST_KEYS)
            raise ProtocolError(f"unknown key(s) {', '.join(map(repr, unknown))} in the inference request")
        request_id = payload.get("id")
        if request_id is None:
            request_id = next(self._ids)
        elif type(request_id) is not str:
            raise ProtocolError(f"'id' must be a string, got {describe(request_id)}")
        if "parameters" in payload:
            _object("'parameters'", payload["parameters"])
        tensors = payload.get("inputs")
        if type(tensors) is not list or not tensors:
            raise ProtocolError(f"'inputs' must be a non-empty list of tensors, got {describe(tensors)}")
        if len(tensors) == 1 and self._is_matrix(tensors[0]):
            rows = self._matrix(tensors[0])
        else:
            rows = self._plain_columns(tensors) or self._columns(tensors)
        return rows, (request_id, self._selected(payload.get("outputs")))

    def _tensor(self, i: int, tensor: Any) -> tuple[str, list[int], str, Any]:
        tensor = _object(f"inputs[{i}]", tensor)
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
        if missing or (len(tensor) > 4 and not set(tensor) <= _TENSOR_KEYS):
            what = (
                f"missing {', '.join(missing)}"
                if missing
                else f"unknown key(s) {', '.join(sorted(set(tensor) - _TENSOR_KEYS))}"
            )
            raise ProtocolError(f"inputs[{i}]: {what} (a tensor has name, shape, datatype, data)")
        name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
        if type(name) is not str:
            raise ProtocolError(f"inputs[{i}].name must be a string, got {describe(name)}")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise ProtocolError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
        if type(datatype) is not str or datatype not in _KINDS:
            raise ProtocolError(f"input {name!r}: unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")
        if "parameters" in tensor:
            _object(f"input {name!r}: 'parameters'", tensor["parameters"])
        return name, shape, datatype, tensor["data"]

    def _is_matrix(self, tensor: Any) -> bool:
        name = tensor.get("name") if type(tensor) is dict else None
        return type(name) is not str or name not in self.index  # (a wrong name type: _tensor names it)

    def _fast_matrix(self, tensor: dict[str, Any]) -> list[list[Any]] | None:
        """Nested float rows for number inputs (the chain checks the values), else None."""
        if type(tensor) is not dict:
            return None
        shape, data = tensor.get("shape"), tensor.get("data")
        datatype = tensor.get("datatype")
        if (
            len(tensor) == 4
            and type(datatype) is str
            and datatype in self.chain_checks
            and type(tensor.get("name")) is str
            and type(shape) is list
            and len(shape) == 2
            and shape[1] == self.width
            and type(data) is list
            and len(data) == shape[0]
            and shape[0]
            and type(shape[0]) is int
            and type(shape[1]) is int
            and set(map(type, data)) == _LIST
            and set(map(len, data)) == {self.width}
        ):
            return data
        return None

    def _matrix(self, tensor: Any) -> list[list[Any]]:
        rows = self._fast_matrix(tensor)
        if rows is not None:
            return rows
        name, shape, datatype, data = self._tensor(0, tensor)
        width = self.width
        if len(shape) != 2 or shape[1] != width:
            raise ProtocolError(
                f"unknown input {name!r}: send one tensor per input ({self._names}) or one tensor "
                f"of shape [N, {width}] with the inputs as columns; got shape {shape}"
            )
        for field, kind, _ in self.inputs if datatype not in self.matrix_types else ():
            if datatype not in FITS[kind]:
                raise ProtocolError(
                    f"input {name!r}: datatype {datatype} does not fit {kind} input {field!r}; "
                    "send one tensor per input when their types differ"
                )
        n = shape[0]
        if type(data) is not list:
            raise ProtocolError(f"input {name!r}: data must be a list, got {describe(data)}")
        if data and type(data[0]) is list:
            if len(data) != n or not all(type(r) is list and len(r) == width for r in data):
                raise ProtocolError(f"input {name!r}: nested data does not match shape {shape}")
            rows = data
        elif len(data) != n * width:
            raise ProtocolError(f"input {name!r}: shape {shape} holds {n * width} values, data has {len(data)}")
        else:
            rows = [data[r * width : (r + 1) * width] for r in range(n)]
        if not n:
            raise ProtocolError(f"input {name!r}: shape {shape} has no rows; send at least one")
        if datatype not in self.chain_checks:
            check_values(f"input {name!r}", datatype, list(chain.from_iterable(rows)))
        return rows

    def _plain_columns(self, tensors: list[Any]) -> list[list[Any]] | None:
        """The fast path: the rows when every tensor is a flat [N] column of a float datatype for a
        number input, with plain numbers, and every input is there; else None (then
        :meth:`_columns` decides, and names any problem)."""
        index, numbers, floats, n = self.index, self.numbers, _FLOAT_SET, -1
        columns: list[list[Any] | None] = [None] * self.width
        for tensor in tensors:
            try:
                name, shape, datatype, data = _PARTS(tensor)
            except (KeyError, TypeError):
                return None
            position = index.get(name) if type(name) is str else None
            if (
                position is None
                or len(tensor) != 4
                or not numbers[position]
                or columns[position] is not None
                or type(datatype) is not str
                or datatype not in floats
                or type(shape) is not list
                or len(shape) != 1
                or type(data) is not list
                or shape[0] != len(data)
                or type(shape[0]) is not int
                or (n != shape[0] and n != -1)
            ):
                return None
            n = shape[0]
            columns[position] = data  # the chain checks the values, as numbers
        if n < 1 or None in columns:
            return None
        return [list(row) for row in zip(*columns)]

    def _columns(self, tensors: list[Any]) -> list[list[Any]]:
        columns: list[list[Any] | None] = [None] * self.width
        n = None
        for i, tensor in enumerate(tensors):
            name, shape, datatype, data = self._tensor(i, tensor)
            position = self.index.get(name)
            if position is None:
                raise ProtocolError(f"unknown input {name!r} (inputs: {self._names})")
            if columns[position] is not None:
                raise ProtocolError(f"input {name!r} is given twice")
            kind = self.inputs[position][1]
            if datatype not in FITS[kind]:
                raise ProtocolError(
                    f"input {name!r}: datatype {datatype} does not fit a {kind} input (use {DATATYPE_OF[kind]})"
                )
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
                raise ProtocolError(f"input {name!r}: shape must be [N] or [N, 1], got {shape}")
            if type(data) is not list:
                raise ProtocolError(f"input {name!r}: data must be a list, got {describe(data)}")
            if data and type(data[0]) is list:
                if not all(type(v) is list and len(v) == 1 for v in data):
                    raise ProtocolError(f"input {name!r}: nested data does not match shape {shape}")
                data = [v[0] for v in data]
            if len(data) != shape[0]:
                raise ProtocolError(f"input {name!r}: shape {shape} holds {shape[0]} values, data has {len(data)}")
            if n is None:
                n = shape[0]
            elif shape[0] != n:
                raise ProtocolError(f"input {name!r} has {shape[0]} rows, the inputs before it {n}")
            check_values(f"input {name!r}", datatype, data)
            columns[position] = data
        if not n:
            raise ProtocolError("the input tensors have no rows; send at least one")
        for position, (name, _, required) in enumerate(self.inputs):
            if columns[position] is None:
                if required:
                    raise ProtocolError(f"missing input {name!r} (inputs: {self._names})")
                columns[position] = [None] * n
        return [list(row) for row in zip(*columns)]

    def _selected(self, outputs: Any) -> list[str]:
        if outputs is None:
            return self.all_outputs
        if type(outputs) is not list:
            raise ProtocolError(f"'outputs' must be a list of {{\"name\": ...}}, got {describe(outputs)}")
        names = []
        for i, wanted in enumerate(outputs):
            name = _object(f"outputs[{i}]", wanted).get("name")
            if type(name) is not str or name not in self.outputs:
                raise ProtocolError(f"unknown output {name!r} (outputs: {', '.join(self.outputs)})")
            names.append(name)
        return names

    # -- response ------------------------------------------------------------------------------
    def encode(self, predictions: list[dict[str, Any]], context: tuple[str, list[str]]) -> bytes:
        request_id, names = context
        shape, kinds, column = [len(predictions)], self.outputs, self._columns_of
        outputs = [
            {
                "name": name,
                "datatype": kinds[name],
                "shape": shape,
                "data": list(map(column[name], predictions))
                if name != "outliers"
                else [jsonio.dumps(p.get(name)).decode() for p in predictions],
            }
            for name in names
        ]
        return jsonio.dumps(
            {"model_name": self.name, "model_version": self.version, "id": request_id, "outputs": outputs}
        )

    def metadata(self) -> dict[str, Any]:
        """The model metadata response: inputs and outputs with datatypes and shapes."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "mlops",
            "inputs": [{"name": n, "datatype": DATATYPE_OF[t], "shape": [-1]} for n, t, _ in self.inputs],
            "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in self.outputs.items()],
        }
