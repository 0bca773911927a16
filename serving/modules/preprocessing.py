"""Preprocessing: the raw request body -> a validated 2-D feature array in schema order.

Body problems answer 400 (not JSON, not an object, ``instances`` missing, not a list or empty,
keys other than ``instances``). Instance problems answer 422 with a message naming the instance
index and the feature: wrong value count, wrong type, missing required, unknown feature, NaN or
infinity (json.loads accepts the NaN/Infinity tokens; they are refused here as non-finite).

Types: ``number`` takes any finite JSON number (a boolean is not a number); ``integer`` takes a
JSON integer or a float with an integral value (``3.0`` -> 3; ``3.5`` is refused); ``string``
takes a string; ``boolean`` takes ``true``/``false`` only. A missing or null optional input
takes its default. A row is an object keyed by feature name or a list of every input in
schema order. The array is float64 when all inputs are number/integer/boolean, object otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import BundleError, InvalidInstance, ServingError, one_line
from serving.modules.instances import InstanceValidator, decode_instances
from serving.modules.settings import PreprocessingSettings, Scaling  # noqa: F401 (Scaling: re-exported)
from serving.pipeline import Batch, ModuleContext

Settings = PreprocessingSettings


def _check(settings: Settings, inputs: list[Any]) -> None:
    types = {f.name: f.type for f in inputs}
    for name in settings.rename.values():
        if name not in types:
            raise BundleError(f"preprocessing.rename: {name!r} is not an input")
    targets = list(settings.rename.values())
    if len(set(targets)) != len(targets):
        raise BundleError("preprocessing.rename: two request keys name the same input")
    keys = [next((k for k, v in settings.rename.items() if v == n), n) for n in types]
    clash = sorted(set(keys) & set(settings.ignore))
    if len(set(keys)) != len(keys) or clash:
        raise BundleError(f"preprocessing: request keys must be unique and not ignored: {clash or keys}")
    for name, values in settings.categories.items():
        if types.get(name) != "string":
            raise BundleError(f"preprocessing.categories: {name!r} is not a string input")
        if not values or len(set(values)) != len(values):
            raise BundleError(f"preprocessing.categories.{name}: needs distinct values")
        field = next(f for f in inputs if f.name == name)
        if not field.required and field.default not in values:
            raise BundleError(f"preprocessing.categories.{name}: the default {field.default!r} is not a category")
    for name in settings.scale:
        if types.get(name) not in ("number", "integer"):
            raise BundleError(f"preprocessing.scale: {name!r} is not a number or integer input")


_NUMBERS = frozenset({float, int})
SMALL_BODY = 16_384  # bodies up to this size are stacked with the batch's other small ones: one conversion


class InputScaling:
    """``(x - center) / scale`` on some columns; the model module applies it to its own copy."""

    def __init__(self, columns: np.ndarray, center: np.ndarray, scale: np.ndarray):
        self.columns, self.center, self.scale = columns, center, scale

    def __call__(self, features: np.ndarray) -> np.ndarray:
        out = np.array(features, dtype=np.float64 if features.dtype != object else object)
        out[:, self.columns] = (out[:, self.columns].astype(np.float64) - self.center) / self.scale
        return out


class Preprocessing:
    """Decodes and validates every request of the batch, then stacks their rows.

    Fast path (every input is a ``number``): a row whose values are all JSON floats/ints goes
    straight into one float64 array; anything else, and any non-finite or too large value,
    goes through :class:`InstanceValidator`, which names the problem."""

    name = "preprocessing"
    Settings = Settings

    def __init__(self, ctx: ModuleContext, settings: PreprocessingSettings):
        inputs = ctx.spec.io.inputs
        _check(settings, inputs)
        keys = {name: key for key, name in settings.rename.items()}
        self.validator = InstanceValidator(inputs, keys, settings.ignore)
        self.max_rows = ctx.spec.server.max_rows
        self.fast = all(f.type == "number" and f.required for f in inputs)
        self.names = [keys.get(f.name, f.name) for f in inputs]
        self.width = len(inputs)
        self.encode = [
            (i, f.name, {v: float(j) for j, v in enumerate(settings.categories[f.name])})
            for i, f in enumerate(inputs)
            if f.name in settings.categories
        ]
        encoded = {name for _, name, _ in self.encode}
        self.dtype = np.float64 if all(f.type != "string" or f.name in encoded for f in inputs) else object
        if settings.scale:
            columns = [i for i, f in enumerate(inputs) if f.name in settings.scale]
            center = np.array([settings.scale[inputs[i].name].center for i in columns])
            scale = np.array([settings.scale[inputs[i].name].scale for i in columns])
            ctx.shared["model_input_scaling"] = InputScaling(np.array(columns), center, scale)

    async def load(self) -> None:
        return None

    def _quick(self, instances: list[Any]) -> list[list[Any]] | None:
        """The rows when every value is a plain number, else None (then the validator decides)."""
        width, rows = self.width, []
        for row in instances:
            if type(row) is dict:
                if len(row) != width:
                    return None
                try:
                    row = [row[name] for name in self.names]
                except KeyError:
                    return None
            elif type(row) is not list or len(row) != width:
                return None
            if not set(map(type, row)) <= _NUMBERS:
                return None
            rows.append(row)
        return rows

    def _array(self, body: bytes | list[Any]) -> np.ndarray:
        """The request's rows as a 2-D array; ServingError (400/413/422) names the problem.

        Each request becomes its array at once, so the Python lists its JSON decodes to (about
        ten times the body's size) live for one request at a time, not for the whole batch."""
        instances = decode_instances(body, self.max_rows)
        if self.fast:
            rows = self._quick(instances)
            if rows is not None:
                try:
                    features = np.array(rows, dtype=np.float64)
                    if np.isfinite(features).all():
                        return features
                except OverflowError:
                    pass  # an integer too large for a float: the validator names it
        return self._checked(instances)

    def _checked(self, instances: list[Any]) -> np.ndarray:
        """The validator's rows (it names any problem) as an array."""
        rows = [self.validator.row(i, row) for i, row in enumerate(instances)]
        if self.encode:
            self._encode(rows)
        return np.array(rows, dtype=self.dtype)

    def _encode(self, rows: list[list[Any]]) -> None:
        for index, row in enumerate(rows):
            for column, name, codes in self.encode:
                code = codes.get(row[column])
                if code is None:
                    known = ", ".join(map(repr, list(codes)[:10]))
                    raise InvalidInstance(
                        f"instance {index}, feature {name!r}: unknown category {row[column]!r} (known: {known})"
                    )
                row[column] = code

    async def process(self, batch: Batch) -> Batch:
        parts: list[tuple[int, np.ndarray]] = []  # (request, its rows as an array)
        small: list[tuple[int, list[list[Any]]]] = []  # plain-number rows of small bodies, stacked together
        for i, body in enumerate(batch.bodies):
            try:
                if self.fast and len(body) <= SMALL_BODY:
                    instances = decode_instances(body, self.max_rows)
                    rows = self._quick(instances)
                    if rows is not None:
                        small.append((i, rows))
                    else:
                        parts.append((i, self._checked(instances)))
                else:
                    parts.append((i, self._array(body)))
            except ServingError as exc:
                # without its traceback: its frames would keep the decoded JSON alive until answered
                batch.fail(i, exc.with_traceback(None))
        if small:
            try:
                features = np.array([row for _, rows in small for row in rows], dtype=np.float64)
                finite = bool(np.isfinite(features).all())
            except OverflowError:
                finite = False
            if finite and not parts:  # the usual case: one conversion for the whole batch
                start = 0
                for i, rows in small:
                    batch.spans[i] = (start, start + len(rows))
                    start += len(rows)
                batch.features = features
                return batch
            if finite:
                start = 0
                for i, rows in small:
                    parts.append((i, features[start : start + len(rows)]))
                    start += len(rows)
            else:  # rare: each on its own, so the validator names the request at fault
                for i, _ in small:
                    try:
                        parts.append((i, self._array(batch.bodies[i])))
                    except ServingError as exc:
                        batch.fail(i, exc.with_traceback(None))
            parts.sort(key=lambda part: part[0])
        start = 0
        for i, part in parts:
            batch.spans[i] = (start, start + len(part))
            start += len(part)
        if len(parts) == 1:
            batch.features = parts[0][1]
        elif parts:
            batch.features = np.concatenate([part for _, part in parts])
        else:
            batch.features = np.empty((0, self.width), dtype=self.dtype)
        return batch


def features_for(spec: Any, bundle_dir: Path, instances: list[Any]) -> np.ndarray:
    """The array the model gets for ``instances`` (rows as a client sends them) in a server running ``spec``:
    decoded and checked by this module with the spec's settings, then scaled as the model module scales
    it. For the toolkit's holdout scoring. BundleError for bad settings; ValueError, with the message a
    client would get, when the server would refuse the rows."""
    import asyncio
    import json

    from prometheus_client import CollectorRegistry

    from serving.metrics import Metrics

    entry = spec.module("preprocessing")
    ctx = ModuleContext(spec, Path(bundle_dir), Metrics.create(CollectorRegistry()))
    try:
        settings = Settings.model_validate(entry.settings if entry is not None else {})
    except ValueError as exc:
        raise BundleError(f"preprocessing settings: {one_line(exc)}") from None
    module = Preprocessing(ctx, settings)
    batch = asyncio.run(module.process(Batch.of(json.dumps({"instances": instances}).encode())))
    error = batch.errors[0]
    if error is not None:
        raise ValueError(error.message)
    features = batch.features
    assert features is not None  # set for a request without an error
    scaling = ctx.shared.get("model_input_scaling")
    return scaling(features) if scaling is not None else features
