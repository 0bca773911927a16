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

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from serving.errors import ServingError
from serving.modules.instances import InstanceValidator, decode_instances
from serving.pipeline import Batch, ModuleContext


class Settings(BaseModel):
    """Preprocessing takes no settings yet; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


_NUMBERS = frozenset({float, int})


class Preprocessing:
    """Decodes and validates every request of the batch, then stacks their rows.

    Fast path (every input is a ``number``): a row whose values are all JSON floats/ints goes
    straight into one float64 array; anything else, and any non-finite or too large value,
    goes through :class:`InstanceValidator`, which names the problem."""

    name = "preprocessing"
    Settings = Settings

    def __init__(self, ctx: ModuleContext, settings: Settings):
        self.validator = InstanceValidator(ctx.spec.io.inputs)
        inputs = ctx.spec.io.inputs
        self.fast = all(f.type == "number" and f.required for f in inputs)
        self.names = [f.name for f in inputs]
        self.width = len(inputs)

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

    def _rows(self, body: bytes) -> tuple[list[list[Any]], bool]:
        """The request's rows, and whether they still need the finiteness check."""
        instances = decode_instances(body)
        if self.fast:
            rows = self._quick(instances)
            if rows is not None:
                return rows, True
        return [self.validator.row(i, row) for i, row in enumerate(instances)], False

    async def process(self, batch: Batch) -> Batch:
        rows: list[list[Any]] = []
        unchecked = False
        for i, body in enumerate(batch.bodies):
            try:
                mine, quick = self._rows(body)
            except ServingError as exc:
                batch.fail(i, exc)
                continue
            batch.spans[i] = (len(rows), len(rows) + len(mine))
            rows.extend(mine)
            unchecked |= quick
        if unchecked:
            try:
                features = np.array(rows, dtype=np.float64)
                finite = bool(np.isfinite(features).all())
            except OverflowError:
                finite = False
            if not finite:  # rare: find the requests at fault with the exact message
                return self._recheck(batch)
        else:
            features = np.array(rows, dtype=self.validator.dtype) if rows else np.empty((0, self.width))
        batch.features = features
        return batch

    def _recheck(self, batch: Batch) -> Batch:
        rows: list[list[Any]] = []
        for i, body in enumerate(batch.bodies):
            if batch.errors[i] is not None:
                continue
            try:
                mine = [self.validator.row(j, row) for j, row in enumerate(decode_instances(body))]
            except ServingError as exc:
                batch.fail(i, exc)
                mine = []
            batch.spans[i] = (len(rows), len(rows) + len(mine))
            rows.extend(mine)
        batch.features = np.array(rows, dtype=self.validator.dtype) if rows else np.empty((0, self.width))
        return batch
