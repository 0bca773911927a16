"""The Module protocol and the ordered chain that runs a request through the modules.

A module has a ``name``, an ``async load()`` run once before the server listens, and an
``async process(batch)`` that reads and fills fields of the :class:`Batch` it is handed. The
chain times every module with one histogram, ``mlops_module_duration_seconds{module}``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from prometheus_client import Histogram

from serving.metrics import Metrics
from serving.spec import Spec


@dataclass(slots=True)
class Batch:
    """One request on its way through the chain; each module fills the next fields.

    ``body`` (the raw request bytes) -> ``instances`` (the decoded rows) -> ``features`` (the
    2-D array for the model) -> ``outputs`` (raw model outputs by name: ``prediction`` and,
    when asked for, ``proba``) -> ``predictions`` (one dict per instance, the response).
    """

    body: bytes = b""
    instances: list[Any] | None = None
    features: np.ndarray | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


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
        """Handle one batch; raise a ServingError to answer the request with an error."""


class Pipeline:
    """The modules in spec order, loaded once, then run in order for every request."""

    def __init__(self, modules: Sequence[Module], duration: Histogram):
        self.modules = tuple(modules)
        self._timed = tuple((m, duration.labels(module=m.name)) for m in self.modules)
        self.loaded = False

    async def load(self) -> None:
        for module in self.modules:
            await module.load()
        self.loaded = True

    async def process(self, batch: Batch) -> Batch:
        clock = time.perf_counter
        for module, timer in self._timed:
            start = clock()
            try:
                batch = await module.process(batch)
            finally:
                timer.observe(clock() - start)
        return batch
