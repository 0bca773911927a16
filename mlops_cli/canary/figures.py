"""Where a canary analysis' figures come from: Prometheus, or two scrapes of each member's /metrics.

An :class:`Observation` is one window of both members; a source's ``observe`` makes one. Every
failure to get a figure becomes a :class:`Reading` without a value and with the reason (or the whole
observation's ``unavailable`` reason), so the analysis can call the measurement inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..metrics_text import PREDICT_ROUTES_PROMQL, bucket_counts, delta, histogram_quantile, parse_metrics

if TYPE_CHECKING:
    import httpx

    from ..targets import Canary, CanaryMember

PSI_CLAMP = 1e-4  # as serving.modules.drift.EPSILON and the recording rules


@dataclass(frozen=True)
class Reading:
    value: float | None
    detail: str  # why there is no value, or the figure in words ("PSI petal_width 0.41")


def psi(counts: list[float], shares: list[float]) -> float | None:
    """PSI of observed counts against reference shares, observed shares clamped as the runtime does."""
    total = sum(counts)
    if total <= 0:
        return None
    return float(
        sum(
            (max(c / total, PSI_CLAMP) - s) * math.log(max(c / total, PSI_CLAMP) / s)
            for c, s in zip(counts, shares)
            if s > 0
        )
    )


def tvd(a: dict[Any, float], b: dict[Any, float]) -> float | None:
    """Total-variation distance between two count vectors' shares: half the L1 distance, 0..1."""
    ta, tb = sum(a.values()), sum(b.values())
    if ta <= 0 or tb <= 0:
        return None
    return 0.5 * sum(abs(a.get(k, 0.0) / ta - b.get(k, 0.0) / tb) for k in set(a) | set(b))


def worst_psi(by_feature: Mapping[str, float | None], track: str) -> Reading:
    known = {f: v for f, v in by_feature.items() if v is not None and not math.isnan(v)}
    if not known:
        return Reading(None, f"no drift figures for the {track} in the window")
    feature = max(sorted(known), key=lambda f: known[f])
    return Reading(known[feature], f"PSI {feature} {known[feature]:.3g}")


def _shares(predictions: dict[str, float], buckets: dict[float, float]) -> dict[Any, float]:
    if sum(predictions.values()) > 0:
        return dict(predictions)
    return bucket_counts(buckets) if buckets else {}


class Observation:
    """One window of both members; figures by track ("canary" | "stable")."""

    unavailable: str | None = None

    def requests(self, track: str) -> float | None:
        raise NotImplementedError

    def reading(self, kind: str, track: str) -> Reading:
        raise NotImplementedError

    def shift(self) -> Reading:
        raise NotImplementedError

    def query(self, promql: str, track: str) -> Reading:
        return Reading(None, "a query metric needs a Prometheus (monitor.prometheus_url)")


class Unavailable(Observation):
    def __init__(self, reason: str):
        self.unavailable = reason


# --- without Prometheus: two scrapes -------------------------------------------------------------


class ScrapedObservation(Observation):
    def __init__(self, figures: dict[str, dict[str, Any]]):
        self.figures = figures

    def requests(self, track: str) -> float | None:
        return float(self.figures[track]["requests"])

    def reading(self, kind: str, track: str) -> Reading:
        m = self.figures[track]
        if kind == "error_ratio":
            return Reading(m["errors"] / m["requests"] if m["requests"] else None, "")
        if kind == "latency_p99":
            value = histogram_quantile(0.99, m["latency"])
            return Reading(None if math.isnan(value) else value, "" if not math.isnan(value) else "no latency figures")
        if kind == "outlier_rate":
            return Reading(m["outlier_rows"] / m["rows"] if m["rows"] else None, "" if m["rows"] else "no rows")
        if kind == "input_drift":
            if not m["drift_module"]:
                return Reading(None, f"the {track} has no drift module (no mlops_drift_reference_share)")
            return worst_psi(
                {
                    f: psi(
                        [m["bins"].get(f, {}).get(b, 0.0) for b in sorted(shares)], [shares[b] for b in sorted(shares)]
                    )
                    for f, shares in m["shares"].items()
                },
                track,
            )
        raise ValueError(f"unknown kind {kind}")

    def shift(self) -> Reading:
        c, s = self.figures["canary"], self.figures["stable"]
        value = tvd(
            _shares(c["predictions"], c["prediction_buckets"]), _shares(s["predictions"], s["prediction_buckets"])
        )
        if value is None:
            return Reading(None, "no predictions counted for canary or stable in the window")
        return Reading(value, f"TVD of predictions {value:.3g}")


class ScrapeSource:
    """Two scrapes of each member's metrics_url window_s apart; the counters' increase between them."""

    def __init__(self, timeout: float, sleep: Callable[[float], None]):
        self.timeout, self.sleep = timeout, sleep
        self.waited = 0.0
        self.client: httpx.Client | None = None

    def __enter__(self) -> ScrapeSource:
        import httpx

        self.client = httpx.Client(timeout=self.timeout)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()

    def _scrape(self, member: CanaryMember) -> dict[str, Any] | str:
        import httpx

        from ..errors import MlopsError

        assert self.client is not None
        try:
            r = self.client.get(member.metrics_url)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return f"cannot scrape the {member.track} at {member.metrics_url}: {type(exc).__name__}"
        if r.status_code != 200:
            return f"the {member.track}'s {member.metrics_url} answered {r.status_code}"
        try:
            return parse_metrics(r.text)
        except MlopsError as exc:
            return f"the {member.track}'s {member.metrics_url}: {exc}"

    def observe(self, canary: Canary, window_s: float) -> Observation:
        self.waited = 0.0
        members = {"canary": canary.canary, "stable": canary.stable}
        before = {t: self._scrape(m) for t, m in members.items()}
        failed = [v for v in before.values() if isinstance(v, str)]
        if failed:
            return Unavailable(failed[0])
        self.sleep(window_s)
        self.waited = window_s
        after = {t: self._scrape(m) for t, m in members.items()}
        failed = [v for v in after.values() if isinstance(v, str)]
        if failed:
            return Unavailable(failed[0])
        return ScrapedObservation({t: delta(before[t], after[t]) for t in members})  # type: ignore[arg-type]


# --- with Prometheus: instant queries over the window ------------------------------------------------


def selector(member_selector: str, *more: str) -> str:
    return "{" + ", ".join(p for p in (member_selector.strip().strip(","), *more) if p) + "}"


def queries(member_selector: str, window: str, by: tuple[str, ...] = ()) -> dict[str, str]:
    """The PromQL of each figure of one member over `window` (e.g. "60s"). With `by` (labels kept, e.g.
    ("namespace", "track")) they are the recording rules of deploy/monitoring/mlops-rules.yml (group
    mlops.canary, selector `track!=""`, window 1m); a unit test checks that the two are the same."""

    def agg(op: str, *extra: str) -> str:
        labels = ", ".join((*by, *extra))
        return f"{op} by ({labels})" if labels else op

    def on(*extra: str) -> str:
        return f"on ({', '.join((*by, *extra))})"

    predict = selector(member_selector, f'route=~"{PREDICT_ROUTES_PROMQL}"')
    errors = selector(member_selector, f'route=~"{PREDICT_ROUTES_PROMQL}"', 'status=~"5.."')
    plain = selector(member_selector)
    requests = f"{agg('sum')} (increase(mlops_http_requests_total{predict}[{window}]))"
    rows = f"{agg('sum')} (increase(mlops_batch_size_rows_sum{plain}[{window}]))"
    obs = f"{agg('sum', 'feature', 'bin')} (increase(mlops_drift_observations_total{plain}[{window}]))"
    total = f"{agg('sum', 'feature')} (increase(mlops_drift_observations_total{plain}[{window}]))"
    observed = f"clamp_min({obs} / {on('feature')} group_left {total}, {PSI_CLAMP})"
    reference = f"{agg('max', 'feature', 'bin')} (mlops_drift_reference_share{plain})"
    predictions = f"{agg('sum', 'label')} (increase(mlops_predictions_total{plain}[{window}]))"
    return {
        "requests": requests,
        "error_ratio": f"({agg('sum')} (increase(mlops_http_requests_total{errors}[{window}])) or 0 * {requests}) / {requests}",
        "latency_p99": f"histogram_quantile(0.99, {agg('sum', 'le')} (rate(mlops_http_request_duration_seconds_bucket{predict}[{window}])))",
        "input_drift": f"{agg('sum', 'feature')} (({observed} - {on('feature', 'bin')} {reference}) "
        f"* ln({observed} / {on('feature', 'bin')} {reference}))",
        "drift_module": f"count(mlops_drift_reference_share{plain})",
        "outlier_rate": f"({agg('sum')} (increase(mlops_outlier_instances_total{plain}[{window}])) or 0 * {rows}) / {rows}",
        "predictions": predictions,
        "prediction_shares": f"{predictions} / {on()} group_left {agg('sum')} (increase(mlops_predictions_total{plain}[{window}]))",
        "prediction_buckets": f"{agg('sum', 'le')} (increase(mlops_prediction_value_bucket{plain}[{window}]))",
    }


class PromError(Exception):
    pass


class PrometheusObservation(Observation):
    def __init__(self, source: PrometheusSource, canary: Canary, window: str):
        self.source = source
        self.q = {"canary": queries(canary.canary.selector, window), "stable": queries(canary.stable.selector, window)}
        self.selectors = {"canary": canary.canary.selector, "stable": canary.stable.selector}
        self.window = window
        self.cache: dict[str, list[dict]] = {}

    def _run(self, expr: str) -> list[dict]:
        if expr not in self.cache:
            self.cache[expr] = self.source.query(expr)
        return self.cache[expr]

    def _scalar(self, expr: str) -> float | None:
        result = self._run(expr)
        if len(result) != 1:
            return None
        return float(result[0]["value"][1])

    def _reading(self, expr: str, what: str) -> Reading:
        try:
            value = self._scalar(expr)
        except PromError as exc:
            return Reading(None, str(exc))
        if value is None or math.isnan(value):
            return Reading(None, f"no data for {what} in the last {self.window}")
        return Reading(value, "")

    def requests(self, track: str) -> float | None:
        try:
            value = self._scalar(self.q[track]["requests"])
        except PromError as exc:
            self.unavailable = str(exc)
            return None
        return None if value is None or math.isnan(value) else value

    def reading(self, kind: str, track: str) -> Reading:
        q = self.q[track]
        if kind != "input_drift":
            return self._reading(q[kind], f"{kind} of the {track}")
        try:
            if not self._run(q["drift_module"]):
                return Reading(None, f"the {track} has no drift module (no mlops_drift_reference_share)")
            by_feature = {r["metric"].get("feature", ""): float(r["value"][1]) for r in self._run(q["input_drift"])}
        except PromError as exc:
            return Reading(None, str(exc))
        return worst_psi(by_feature, track)

    def shift(self) -> Reading:
        try:
            counts = {}
            for track in ("canary", "stable"):
                got = {
                    r["metric"].get("label", ""): float(r["value"][1]) for r in self._run(self.q[track]["predictions"])
                }
                if sum(v for v in got.values() if not math.isnan(v)) <= 0:
                    got = bucket_counts(
                        {
                            float(r["metric"].get("le", "+Inf")): float(r["value"][1])
                            for r in self._run(self.q[track]["prediction_buckets"])
                        }
                    )
                counts[track] = {k: v for k, v in got.items() if not math.isnan(v)}
        except PromError as exc:
            return Reading(None, str(exc))
        value = tvd(counts["canary"], counts["stable"])
        if value is None:
            return Reading(None, f"no predictions counted for canary or stable in the last {self.window}")
        return Reading(value, f"TVD of predictions {value:.3g}")

    def query(self, promql: str, track: str) -> Reading:
        expr = promql.replace("{selector}", self.selectors[track]).replace("{window}", self.window)
        try:
            result = self._run(expr)
        except PromError as exc:
            return Reading(None, str(exc))
        if len(result) != 1:
            return Reading(
                None, f"the query returned {len(result)} series for the {track} (one is needed; aggregate it)"
            )
        return self._reading(expr, f"the query for the {track}")


class PrometheusSource:
    """Instant queries at Prometheus' /api/v1/query over `[<window>s]`; nothing to wait for."""

    def __init__(self, url: str, timeout: float):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.waited = 0.0
        self.client: httpx.Client | None = None

    def __enter__(self) -> PrometheusSource:
        import httpx

        self.client = httpx.Client(timeout=self.timeout)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()

    def query(self, expr: str) -> list[dict]:
        import httpx

        assert self.client is not None
        try:
            r = self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise PromError(f"Prometheus at {self.url} unreachable: {type(exc).__name__}") from None
        try:
            body = r.json()
            if r.status_code != 200 or body.get("status") != "success":
                raise ValueError(body.get("error", ""))
            result = body["data"]["result"]
            if body["data"].get("resultType") == "scalar":
                return [{"metric": {}, "value": result}]
            return list(result)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PromError(
                f"Prometheus at {self.url} answered {r.status_code} to a query: "
                f"{' '.join(str(exc).split())[:200] or 'no result'}"
            ) from None

    def observe(self, canary: Canary, window_s: float) -> Observation:
        window = f"{max(1, round(window_s))}s"
        return PrometheusObservation(self, canary, window)
