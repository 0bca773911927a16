"""ONNX models through onnxruntime, behind the estimator interface the model module calls.

`OnnxModel` offers `predict`, `predict_proba` (when the graph has a probability output),
`classes_` and `n_features_in_`. Models exported by skl2onnx (or any exporter following the
ai.onnx.ml conventions) work as they come: one 2-D float/double input `[N, features]`; outputs
label then probabilities, either a tensor `[N, classes]` or ZipMap's list of {class: p}.

The class order is read from the graph itself (the `classlabels_*` attribute of the classifier
node) with a small protobuf reader, so the image needs onnxruntime only, not the onnx package;
a ZipMap output gives it too. The session runs one thread: concurrency comes from batching and
from replicas.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from serving.errors import BundleError

INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")


# --- protobuf wire format, enough to read node attributes of an onnx.ModelProto -------------


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): ints for varints, memoryviews for length-delimited."""
    pos = 0
    value: int | memoryview | None
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def class_labels(model_bytes: bytes) -> list[Any] | None:
    """The class labels of the first classifier node of the main graph, in output order.

    onnx.proto: ModelProto.graph = 7; GraphProto.node = 1; NodeProto.attribute = 5;
    AttributeProto.name = 1, .ints = 8 (packed or not), .strings = 9.
    """
    for number, wire, graph in _fields(memoryview(model_bytes)):
        if number != 7 or wire != 2:
            continue
        for gnum, gwire, node in _fields(graph):
            if gnum != 1 or gwire != 2:
                continue
            for nnum, nwire, attr in _fields(node):
                if nnum != 5 or nwire != 2:
                    continue
                name, ints, strings = None, [], []
                for anum, awire, value in _fields(attr):
                    if anum == 1 and awire == 2:
                        name = bytes(value).decode("utf-8", "replace")
                    elif anum == 8 and awire == 0:
                        ints.append(_signed(value))
                    elif anum == 8 and awire == 2:
                        pos = 0
                        while pos < len(value):
                            item, pos = _varint(value, pos)
                            ints.append(_signed(item))
                    elif anum == 9 and awire == 2:
                        strings.append(bytes(value).decode("utf-8"))
                if name in LABEL_ATTRIBUTES and (ints or strings):
                    return strings if name == "classlabels_strings" else ints
    return None


# --- the estimator ---------------------------------------------------------------------------


class OnnxModel:
    """A graph with one output used (regression, or a classifier without probabilities)."""

    classes_: np.ndarray | None = None

    def __init__(self, session: Any, data: bytes):
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].type not in INPUT_DTYPES:
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise BundleError(f"the ONNX model needs one 2-D float or double input [N, features]; it has {found}")
        self.session = session
        self.input_name = inputs[0].name
        self.dtype = INPUT_DTYPES[inputs[0].type]
        width = inputs[0].shape[1]
        if isinstance(width, int):
            self.n_features_in_ = width
        self.output_names = [o.name for o in session.get_outputs()]

    def _run(self, name: str, features: np.ndarray) -> Any:
        [out] = self.session.run([name], {self.input_name: np.ascontiguousarray(features, dtype=self.dtype)})
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        out = np.asarray(self._run(self.output_names[0], features))
        return out.reshape(len(features)) if out.ndim == 2 and out.shape[1] == 1 else out


class OnnxClassifier(OnnxModel):
    """Outputs label, then probabilities: a tensor [N, classes] or ZipMap's list of {class: p}."""

    def __init__(self, session: Any, data: bytes):
        super().__init__(session, data)
        proba = session.get_outputs()[1]
        self.proba_name = proba.name
        self.zipmap = proba.type.startswith("seq(map(")
        labels = class_labels(data)
        self.classes_ = np.asarray(labels) if labels is not None else None
        if self.classes_ is None and not self.zipmap:
            raise BundleError(
                "cannot tell the ONNX classifier's class order: its graph has no classlabels "
                "attribute and its probability output is not a ZipMap"
            )

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        out = self._run(self.proba_name, features)
        if not self.zipmap:
            return np.asarray(out, dtype=np.float64)
        if self.classes_ is None:
            self.classes_ = np.asarray(list(out[0])) if out else None
        classes = [] if self.classes_ is None else self.classes_.tolist()
        return np.array([[row[c] for c in classes] for row in out], dtype=np.float64).reshape(len(out), len(classes))


def load_onnx(data: bytes, task: str) -> OnnxModel:
    """A verified artifact's bytes as an estimator; a classifier when it has a probability output."""
    import onnxruntime as ort  # only the onnx framework needs it

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # concurrency comes from batching and replicas
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    if task == "classification" and len(session.get_outputs()) >= 2:
        return OnnxClassifier(session, data)
    return OnnxModel(session, data)
