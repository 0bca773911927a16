"""serving.loopmetrics exposes exactly what prometheus-client's own metrics would for the same
updates: same names, types, labels, buckets and values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.loopmetrics import LoopCounter, LoopGauge, LoopHistogram


def _exposition(registry: CollectorRegistry) -> str:
    """The text format without prometheus-client's ``*_created`` series (off in the server)."""
    return "".join(
        line for line in generate_latest(registry).decode().splitlines(keepends=True) if "_created" not in line
    )


def _update(counter, gauge, histogram) -> None:
    for route, status in (("/a", "200"), ("/a", "200"), ("/b", "500")):
        counter.labels(route=route, status=status).inc()
    counter.labels("/b", "500").inc(2.5)
    gauge.inc()
    gauge.inc()
    gauge.dec()
    for value in (0.0005, 0.001, 0.003, 0.02, 7.0, 0.001):
        histogram.labels(route="/a").observe(value)
    histogram.labels(route="/b")  # a child with no observations yet


def test_same_exposition_as_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1.0)
    _update(
        Counter("x_requests_total", "Requests.", ["route", "status"], registry=theirs),
        Gauge("x_in_flight", "In flight.", registry=theirs),
        Histogram("x_seconds", "Latency.", ["route"], buckets=buckets, registry=theirs),
    )
    _update(
        LoopCounter("x_requests_total", "Requests.", ["route", "status"], registry=ours),
        LoopGauge("x_in_flight", "In flight.", registry=ours),
        LoopHistogram("x_seconds", "Latency.", ["route"], buckets=buckets, registry=ours),
    )
    assert _exposition(ours) == _exposition(theirs)
    assert ours.get_sample_value("x_seconds_bucket", {"route": "/a", "le": "0.001"}) == 3


def test_label_mistakes_and_bad_buckets_are_refused() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("y_total", "Y.", ["route"], registry=registry)
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="buckets must increase"):
        LoopHistogram("z_seconds", "Z.", buckets=(1.0, 0.5), registry=registry)
