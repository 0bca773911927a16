"""The figures of a model server's `/metrics` page, and their increase between two scrapes.

Shared by `mlops monitor` and the canary analysis (mlops_cli.canary.analysis), so that both read the
same series the same way. Predict requests are those of every predict route (v1, the Open Inference
Protocol's v2 infer, KServe v1), as the recording rules and dashboards of deploy/monitoring count them.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import TemporaryError
from .extras import load

# the route templates of the predict endpoints (serving/app.py, serving/oip_routes.py, serving/kserve_v1.py)
PREDICT_ROUTES = frozenset(
    {
        "/v1/predict",
        "/v1/models/{name}:predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
)
# the same set as a PromQL regex, exactly as deploy/monitoring/mlops-rules.yml writes it
PREDICT_ROUTES_PROMQL = (
    r"/v1/predict|/v1/models/\\{name\\}:predict|/v2/models/\\{name\\}(/versions/\\{version\\})?/infer"
)


def parse_metrics(text: str) -> dict[str, Any]:
    """The figures `mlops monitor` and the canary analysis use, from one scrape (counters since start).

    Keys: requests, errors (5xx), latency ({le: cumulative count} over the predict routes), outliers
    ({feature: values}), outlier_rows, rows, model, model_labels, bins ({feature: {bin: count}}),
    shares ({feature: {bin: reference share}}), predictions ({label: count}), prediction_buckets
    ({le: cumulative count}, regression), and the modules seen: drift_module, outlier_module.
    """
    text_string_to_metric_families = load(
        "prometheus_client.parser", "reading a server's Prometheus metrics", "serve"
    ).text_string_to_metric_families

    out: dict[str, Any] = {
        "requests": 0,
        "errors": 0,
        "outliers": {},
        "outlier_rows": 0.0,
        "rows": 0.0,
        "model": None,
        "bins": {},
        "shares": {},
        "latency": {},
        "predictions": {},
        "prediction_buckets": {},
        "drift_module": False,
        "outlier_module": False,
    }
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise TemporaryError(f"the server's /metrics is not Prometheus text: {exc}") from None
    for family in families:
        if family.name == "mlops_outlier_instances":
            out["outlier_module"] = True
        elif family.name == "mlops_drift_reference_share":
            out["drift_module"] = True
        for s in family.samples:
            if s.name == "mlops_http_requests_total" and s.labels.get("route") in PREDICT_ROUTES:
                out["requests"] += int(s.value)
                if s.labels.get("status", "").startswith("5"):
                    out["errors"] += int(s.value)
            elif s.name == "mlops_http_request_duration_seconds_bucket" and s.labels.get("route") in PREDICT_ROUTES:
                le = float(s.labels.get("le", "+Inf"))
                out["latency"][le] = out["latency"].get(le, 0.0) + s.value
            elif s.name == "mlops_predictions_total":
                out["predictions"][s.labels.get("label", "")] = s.value
            elif s.name == "mlops_prediction_value_bucket":
                out["prediction_buckets"][float(s.labels.get("le", "+Inf"))] = s.value
            elif s.name == "mlops_outliers_total":
                out["outliers"][s.labels.get("feature", "")] = int(s.value)
            elif s.name == "mlops_outlier_instances_total":
                out["outlier_rows"] = max(out["outlier_rows"], s.value)
            elif s.name == "mlops_batch_size_rows_sum":
                out["rows"] = s.value
            elif s.name == "mlops_model_info" and s.value == 1:
                out["model"] = f"{s.labels.get('name')}@{s.labels.get('version')}"
                out["model_labels"] = {"name": s.labels.get("name", ""), "version": s.labels.get("version", "")}
            elif s.name == "mlops_drift_observations_total":
                out["bins"].setdefault(s.labels.get("feature", ""), {})[int(s.labels.get("bin", 0))] = s.value
            elif s.name == "mlops_drift_reference_share":
                out["shares"].setdefault(s.labels.get("feature", ""), {})[int(s.labels.get("bin", 0))] = s.value
    return out


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The counters' increase between two scrapes (a restart in between: the later values, as Prometheus does)."""

    def inc(a: float, b: float) -> float:
        return b - a if b >= a else b

    def incs(a: dict[Any, float], b: dict[Any, float]) -> dict[Any, float]:
        return {k: inc(a.get(k, 0), v) for k, v in b.items()}

    out = dict(after)
    out["requests"] = int(inc(before["requests"], after["requests"]))
    out["errors"] = int(inc(before["errors"], after["errors"]))
    out["outlier_rows"] = inc(before["outlier_rows"], after["outlier_rows"])
    out["rows"] = inc(before["rows"], after["rows"])
    out["outliers"] = {f: int(inc(before["outliers"].get(f, 0), v)) for f, v in after["outliers"].items()}
    out["bins"] = {f: incs(before["bins"].get(f, {}), bins) for f, bins in after["bins"].items()}
    out["latency"] = incs(before.get("latency", {}), after.get("latency", {}))
    out["predictions"] = incs(before.get("predictions", {}), after.get("predictions", {}))
    out["prediction_buckets"] = incs(before.get("prediction_buckets", {}), after.get("prediction_buckets", {}))
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative buckets {upper bound: count}: linear interpolation
    inside the bucket holding the rank; the highest finite bound when it falls in the +Inf bucket; NaN
    without observations."""
    if not buckets or math.inf not in buckets:
        return math.nan
    bounds = sorted(buckets)
    counts = [buckets[b] for b in bounds]
    for i in range(1, len(counts)):  # cumulative counts never decrease (as Prometheus enforces)
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    for i, (bound, count) in enumerate(zip(bounds, counts)):
        if count >= rank:
            if bound == math.inf:
                return bounds[-2] if len(bounds) > 1 else math.nan
            lower = bounds[i - 1] if i > 0 else 0.0
            below = counts[i - 1] if i > 0 else 0.0
            if i == 0 and bound <= 0:
                return bound
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
    return bounds[-2] if len(bounds) > 1 else math.nan


def bucket_counts(buckets: dict[float, float]) -> dict[float, float]:
    """Per-bucket counts (not cumulative) of cumulative buckets {upper bound: count}."""
    out: dict[float, float] = {}
    previous = 0.0
    for bound in sorted(buckets):
        out[bound] = max(buckets[bound] - previous, 0.0)
        previous = max(buckets[bound], previous)
    return out
