"""Counters, gauges and histograms for the per-request hot path, updated without locks.

prometheus-client's metrics take a lock per update (a histogram observation is two locked
increments plus checks); the predict path records seven updates per request. These record into
plain Python numbers from the event loop thread, and one collector per metric, registered on the
injected CollectorRegistry, exposes them in the usual families (same names, types, labels and
``le`` buckets). A scrape from another thread may see a histogram's sum and count one
observation apart; nothing else is shared.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class _Metric:
    kind: str = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *, registry: CollectorRegistry):
        self.name = name.removesuffix("_total") if self.kind == "counter" else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        if not self.labelnames:
            self._children[()] = self._child()
        registry.register(self)

    def _child(self) -> Any:
        raise NotImplementedError

    def _family(self) -> Metric:
        raise NotImplementedError

    def _add(self, family: Any, labels: list[str], child: Any) -> None:
        raise NotImplementedError

    def labels(self, *values: str, **named: str) -> Any:
        key = tuple(str(v) for v in values) or tuple(str(named[n]) for n in self.labelnames)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child()
        return child

    def describe(self) -> list[Any]:
        return [self._family()]

    def collect(self) -> list[Any]:
        family = self._family()
        for key, child in list(self._children.items()):
            self._add(family, list(key), child)
        return [family]


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class LoopCounter(_Metric):
    kind = "counter"

    def _child(self) -> _Value:
        return _Value()

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Any, labels: list[str], child: _Value) -> None:
        family.add_metric(labels, child.value)

    def inc(self, amount: float = 1.0) -> None:
        self._children[()].value += amount


class LoopGauge(LoopCounter):
    kind = "gauge"

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def dec(self, amount: float = 1.0) -> None:
        self._children[()].value -= amount

    def set(self, value: float) -> None:
        self._children[()].value = value


class _Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class LoopHistogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ):
        self.bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: buckets must increase")
        super().__init__(name, documentation, labelnames, registry=registry)

    def _child(self) -> _Buckets:
        return _Buckets(self.bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Any, labels: list[str], child: _Buckets) -> None:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), list(child.counts)):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric(labels, buckets, child.sum)

    def observe(self, value: float) -> None:
        self._children[()].observe(value)
