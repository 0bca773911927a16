"""The Module protocol and the ordered chain that runs a batch of requests through the modules.

A module has a ``name``, an ``async load()`` run once before the server listens, and an
``async process(batch)`` that reads and fills fields of the :class:`Batch` it is handed. A batch
carries one or more requests (coalesced by :mod:`serving.batching`), so every module runs once
per batch, vectorised over all its rows. A module that cannot answer one request calls
``batch.fail(i, error)``; the chain then drops that request's rows and the other requests go
on. The chain times every module with one histogram, ``mlops_module_duration_seconds{module}``
(one observation per batch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from serving.errors import ServingError
from serving.metrics import Metrics
from serving.spec import Spec


@dataclass(slots=True)
class Batch:
    """Requests on their way through the chain; each module fills the next fields.

    Per request ``i``: ``bodies[i]`` (raw bytes, or rows a protocol adapter decoded) -> ``spans[i]`` (its rows in ``features``) ->
    ``predictions[i]`` (one dict per instance, the response), or ``errors[i]`` once it failed.
    Row-aligned (one entry per row of the live requests, in order): ``features`` (the 2-D
    array for the model), ``outputs`` (raw model outputs by name: ``prediction`` and, when
    asked for, ``proba``) and ``extra`` (additional response fields by name, e.g. outliers).
    """

    bodies: list[bytes | list[Any]]
    errors: list[ServingError | None] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    features: np.ndarray | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, list[Any]] = field(default_factory=dict)
    predictions: list[list[dict[str, Any]] | None] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    _failed: bool = False

    def __post_init__(self) -> None:
        n = len(self.bodies)
        self.errors = [None] * n
        self.spans = [(0, 0)] * n
        self.predictions = [None] * n

    @classmethod
    def of(cls, *bodies: bytes) -> Batch:
        return cls(list(bodies))

    @property
    def live(self) -> list[int]:
        """Indexes of the requests not failed so far."""
        return [i for i, e in enumerate(self.errors) if e is None]

    def fail(self, index: int, error: ServingError) -> None:
        """Answer request ``index`` with ``error``; its rows leave the batch after this module."""
        if self.errors[index] is None:
            self.errors[index] = error
            self._failed = True

    def compact(self) -> None:
        """Drop the rows of requests failed since the last compaction (the chain calls this)."""
        if not self._failed:
            return
        self._failed = False
        keep = np.zeros(len(self.features) if self.features is not None else 0, dtype=bool)
        spans, start = [], 0
        for i, (lo, hi) in enumerate(self.spans):
            if self.errors[i] is None and hi > lo:
                keep[lo:hi] = True
                spans.append((start, start + hi - lo))
                start += hi - lo
            else:
                spans.append((start, start))
        self.spans = spans
        if self.features is not None:
            self.features = self.features[keep]
        self.outputs = {k: v[keep] for k, v in self.outputs.items()}
        self.extra = {k: [x for x, kept in zip(v, keep) if kept] for k, v in self.extra.items()}


@dataclass
class ModuleContext:
    """What a module may use: the spec, the bundle, the metrics, and ``shared``, where a module
    publishes at load time what later modules need (the model module puts ``model`` there)."""

    spec: Spec
    bundle_dir: Path
    metrics: Metrics
    shared: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Module(Protocol):
    name: str

    async def load(self) -> None:
        """Prepare everything (read artifacts, check settings); raise BundleError to refuse."""

    async def process(self, batch: Batch) -> Batch:
        """Handle one batch; ``batch.fail(i, ServingError(...))`` answers request i with an error."""


class Pipeline:
    """The modules in spec order, loaded once, then run in order for every batch."""

    def __init__(self, modules: Sequence[Module], duration: Any):
        self.modules = tuple(modules)
        self._timed = tuple((m, duration.labels(module=m.name)) for m in self.modules)
        self.loaded = False

    async def load(self) -> None:
        for module in self.modules:
            await module.load()
        self.loaded = True

    async def process(self, batch: Batch) -> Batch:
        """Run the chain; a module raising ServingError fails every request still in the batch."""
        clock = time.perf_counter
        for module, timer in self._timed:
            if all(e is not None for e in batch.errors):
                break
            start = clock()
            try:
                batch = await module.process(batch)
            except ServingError as exc:
                for i in batch.live:
                    batch.fail(i, exc)
            finally:
                timer.observe(clock() - start)
            batch.compact()
        return batch
