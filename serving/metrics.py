"""Prometheus metrics, always created on an injected :class:`CollectorRegistry`.

The per-request and per-batch ones are :mod:`serving.loopmetrics` (no lock per update, same
exposition); the rest are prometheus-client's own.

Every metric name the runtime exposes is listed in :data:`METRIC_NAMES` (dashboards and alert
rules refer only to these). Label values are bounded: routes are route templates or ``other``,
methods are the standard verbs or ``other``, labels are the model's classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.loopmetrics import LoopCounter, LoopGauge, LoopHistogram

HTTP_REQUESTS = "mlops_http_requests_total"
HTTP_DURATION = "mlops_http_request_duration_seconds"
HTTP_IN_FLIGHT = "mlops_http_requests_in_flight"
MODULE_DURATION = "mlops_module_duration_seconds"
MODEL_INFO = "mlops_model_info"
PREDICTIONS = "mlops_predictions_total"
BATCH_SIZE = "mlops_batch_size_rows"
BATCH_REQUESTS = "mlops_batch_size_requests"
QUEUE_WAIT = "mlops_batch_queue_wait_seconds"
QUEUE_REJECTED = "mlops_batch_queue_rejected_total"
METRIC_NAMES = (
    HTTP_REQUESTS,
    HTTP_DURATION,
    HTTP_IN_FLIGHT,
    MODULE_DURATION,
    MODEL_INFO,
    PREDICTIONS,
    BATCH_SIZE,
    BATCH_REQUESTS,
    QUEUE_WAIT,
    QUEUE_REJECTED,
)
# created only when their module is in the chain
PREDICTION_VALUE = "mlops_prediction_value"  # regression
OUTLIERS = "mlops_outliers_total"
OUTLIER_INSTANCES = "mlops_outlier_instances_total"
DRIFT_OBSERVATIONS = "mlops_drift_observations_total"
DRIFT_REFERENCE_SHARE = "mlops_drift_reference_share"
OPTIONAL_METRIC_NAMES = (PREDICTION_VALUE, OUTLIERS, OUTLIER_INSTANCES, DRIFT_OBSERVATIONS, DRIFT_REFERENCE_SHARE)

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MODULE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
DEFAULT_PREDICTION_BUCKETS = (-1000.0, -100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def http_metrics(registry: CollectorRegistry) -> tuple[LoopCounter, LoopHistogram, LoopGauge]:
    """Requests by route template, method and status; latency; requests in flight."""
    requests = LoopCounter(HTTP_REQUESTS, "HTTP requests answered.", ["route", "method", "status"], registry=registry)
    duration = LoopHistogram(
        HTTP_DURATION, "HTTP request latency.", ["route", "method"], buckets=HTTP_BUCKETS, registry=registry
    )
    in_flight = LoopGauge(HTTP_IN_FLIGHT, "HTTP requests being answered.", registry=registry)
    return requests, duration, in_flight


def module_duration(registry: CollectorRegistry) -> LoopHistogram:
    """Time spent in each pipeline module, per request."""
    return LoopHistogram(
        MODULE_DURATION,
        "Time spent in each pipeline module, per batch.",
        ["module"],
        buckets=MODULE_BUCKETS,
        registry=registry,
    )


def model_info(registry: CollectorRegistry) -> Gauge:
    """Always 1; the labels say which model is served."""
    return Gauge(MODEL_INFO, "The served model.", ["name", "version", "sha256", "framework"], registry=registry)


def predictions(registry: CollectorRegistry) -> Counter:
    """Predictions by label (classification)."""
    return Counter(PREDICTIONS, "Predictions returned, by label.", ["label"], registry=registry)


def batch_metrics(registry: CollectorRegistry) -> tuple[LoopHistogram, LoopHistogram, LoopHistogram, LoopCounter]:
    """Rows and requests per batch, time a request waits for its batch, requests shed (503)."""
    rows = LoopHistogram(
        BATCH_SIZE, "Rows per batch run through the module chain.", buckets=BATCH_BUCKETS, registry=registry
    )
    requests = LoopHistogram(
        BATCH_REQUESTS, "Requests per batch run through the module chain.", buckets=BATCH_BUCKETS, registry=registry
    )
    wait = LoopHistogram(
        QUEUE_WAIT, "Time a request waited in the queue for its batch.", buckets=QUEUE_BUCKETS, registry=registry
    )
    rejected = LoopCounter(
        QUEUE_REJECTED,
        "Requests refused with 503 overloaded: the queue was full or the in-flight bytes over budget.",
        registry=registry,
    )
    return rows, requests, wait, rejected


def prediction_histogram(registry: CollectorRegistry, buckets: list[float]) -> Histogram:
    """Regression: the distribution of predicted values."""
    return Histogram(PREDICTION_VALUE, "Predicted values (regression).", buckets=buckets, registry=registry)


def outlier_metrics(registry: CollectorRegistry) -> tuple[Counter, Counter]:
    """Values outside their reference bounds, by feature; instances with at least one."""
    values = Counter(OUTLIERS, "Feature values outside the reference bounds.", ["feature"], registry=registry)
    rows = Counter(
        OUTLIER_INSTANCES,
        "Instances flagged as outliers, by reason (bounds or detector).",
        ["reason"],
        registry=registry,
    )
    return values, rows


@dataclass(frozen=True)
class Metrics:
    """All the runtime's metrics on one registry."""

    registry: CollectorRegistry
    http_requests: LoopCounter
    http_duration: LoopHistogram
    http_in_flight: LoopGauge
    module_duration: LoopHistogram
    model_info: Gauge
    predictions: Counter
    batch_rows: LoopHistogram
    batch_requests: LoopHistogram
    queue_wait: LoopHistogram
    queue_rejected: LoopCounter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        requests, duration, in_flight = http_metrics(registry)
        rows, batch_requests, wait, rejected = batch_metrics(registry)
        return cls(
            registry=registry,
            http_requests=requests,
            http_duration=duration,
            http_in_flight=in_flight,
            module_duration=module_duration(registry),
            model_info=model_info(registry),
            predictions=predictions(registry),
            batch_rows=rows,
            batch_requests=batch_requests,
            queue_wait=wait,
            queue_rejected=rejected,
        )
