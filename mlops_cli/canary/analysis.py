"""Canary analysis: is the canary as good as stable on live traffic? pass, fail or inconclusive.

A template (`canary_analysis.templates.<name>`) lists metric checks in Argo Rollouts' words: each is
measured `count` times `interval_s` apart and fails once more than `failure_limit` of its
measurements failed. A measurement compares the canary with stable over the last `window_s`
seconds and evaluates the check's `success_condition` (mlops_cli.canary.condition) on `result`
(the canary's figure) and `stable` (stable's). Kinds:

- error_ratio: 5xx answers (a model that raises answers 500) / predict requests, every predict route;
- latency_p99: p99 of the predict routes' request duration (histogram_quantile), seconds;
- input_drift: PSI of each feature of the canary's inputs against the bundle's reference; the worst
  feature is `result` (stable's worst is `stable`);
- prediction_shift: total-variation distance between the canary's and stable's shares of predicted
  classes (regression: of the prediction histogram's buckets); 0 same, 1 disjoint. `stable` is
  undefined for it: the figure already is the comparison;
- outlier_rate: outlying instances / rows run through the chain (no outlier module: 0 outliers);
- query: the user's PromQL with `{selector}` and `{window}` placed, one series per member.

Figures come from Prometheus (monitor.prometheus_url; instant queries over `[<window>s]` with each
member's selector) or, without one, from two scrapes of each member's /metrics `window_s` apart
(mlops_cli.metrics_text, as `mlops monitor` does). No data, fewer than `min_requests` predict
requests, NaN, an unreachable Prometheus or server: the measurement is `inconclusive` with the
reason, never an exception. The first metric that fails or is inconclusive ends the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import condition
from .figures import Observation, PrometheusSource, Reading, ScrapeSource

if TYPE_CHECKING:
    from ..settings import Settings
    from ..targets import Canary

Kind = Literal["error_ratio", "latency_p99", "input_drift", "prediction_shift", "outlier_rate", "query"]
Outcome = Literal["pass", "fail", "inconclusive"]


class MetricCheck(BaseModel):
    """One metric of a template."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=100)
    """The metric's name in measurements, reasons and notifications."""
    kind: Kind
    """What is measured, canary vs stable over the window (docs/canary.md#analysis)."""
    success_condition: str
    """A safe expression over `result` (canary) and `stable`, e.g. "result <= max(stable * 2, 0.01)"."""
    failure_limit: int = Field(0, ge=0)
    """Failed measurements tolerated; the metric fails when more fail."""
    interval_s: float = Field(10.0, gt=0, le=3600)
    """Seconds between two measurements of this metric."""
    count: int = Field(1, ge=1, le=100)
    """Measurements per analysis run."""
    query: str | None = Field(None, max_length=2000)
    """kind=query: PromQL with {selector} and {window} placeholders, one series per member."""

    @field_validator("success_condition")
    @classmethod
    def _condition_parses(cls, value: str) -> str:
        try:
            condition.parse(value)
        except condition.ConditionError as exc:
            raise ValueError(f"{exc}: {value!r}") from None
        return value

    @model_validator(mode="after")
    def _query_matches_kind(self) -> MetricCheck:
        if self.kind == "query":
            if not self.query or "{selector}" not in self.query:
                raise ValueError(f"metric {self.name!r} of kind query needs a query with a {{selector}} placeholder")
        elif self.query is not None:
            raise ValueError(f"metric {self.name!r}: query is only for kind query (this one is {self.kind})")
        if self.kind == "prediction_shift" and "stable" in condition.names(self.success_condition):
            raise ValueError(
                f"metric {self.name!r}: a prediction_shift's result already compares canary with stable; "
                "its condition cannot use `stable`"
            )
        return self


class AnalysisTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metrics: list[MetricCheck] = Field(min_length=1)
    """The template's metric checks; the analysis fails when one of them fails."""

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, value: list[MetricCheck]) -> list[MetricCheck]:
        names = [m.name for m in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"metric names must be unique: {', '.join(twice)}")
        return value


DEFAULT_TEMPLATE = AnalysisTemplate(
    metrics=[
        MetricCheck(name="error-ratio", kind="error_ratio", success_condition="result <= max(stable * 2, 0.01)"),
        MetricCheck(
            name="latency-p99", kind="latency_p99", success_condition="result <= max(stable * 1.5, stable + 0.05)"
        ),
        MetricCheck(name="input-drift", kind="input_drift", success_condition="result <= 0.25"),
        MetricCheck(name="prediction-shift", kind="prediction_shift", success_condition="result <= 0.2"),
        MetricCheck(name="outlier-rate", kind="outlier_rate", success_condition="result <= max(stable * 2, 0.05)"),
    ]
)


class CanaryAnalysisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    templates: dict[str, AnalysisTemplate] = Field(default_factory=lambda: {"default": DEFAULT_TEMPLATE})
    """Analysis templates by name (`{analysis: NAME}` steps name them); a built-in `default` checks error ratio, p99 latency, input drift, prediction shift and outlier rate, unless one is given under that name."""
    on_inconclusive: Literal["pause", "abort", "proceed"] = "pause"
    """What a canary does when an analysis is inconclusive (no data, NaN, Prometheus unreachable): pause and retry, abort, or proceed."""
    inconclusive_retries: int = Field(3, ge=0, le=100)
    """With on_inconclusive: pause, how many times an inconclusive analysis is run again before the canary is aborted."""
    min_requests: int = Field(20, ge=1)
    """Fewer predict requests than this in a window (canary or stable, where compared): the measurement is inconclusive."""

    @field_validator("templates")
    @classmethod
    def _with_default(cls, value: dict[str, AnalysisTemplate]) -> dict[str, AnalysisTemplate]:
        return value if "default" in value else {"default": DEFAULT_TEMPLATE, **value}


@dataclass(frozen=True)
class Measurement:
    metric: str
    kind: str
    canary: float | None
    stable: float | None
    outcome: Outcome
    detail: str  # one line, e.g. "PSI petal_width 0.41 > 0.25"


@dataclass(frozen=True)
class AnalysisResult:
    template: str
    verdict: Outcome
    measurements: tuple[Measurement, ...]
    reason: str  # one line for humans / notifiers

    def to_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "verdict": self.verdict,
            "reason": self.reason,
            "measurements": [asdict(m) for m in self.measurements],
        }


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def measure(check: MetricCheck, obs: Observation, min_requests: int) -> Measurement:
    """One measurement of one check from one observation window; inconclusive rather than an exception."""

    def inconclusive(why: str, canary: float | None = None, stable: float | None = None) -> Measurement:
        return Measurement(check.name, check.kind, canary, stable, "inconclusive", why)

    try:
        if obs.unavailable:
            return inconclusive(obs.unavailable)
        enough: dict[str, str | None] = {}
        for track in ("canary", "stable"):
            n = obs.requests(track)
            enough[track] = (
                None
                if n is not None and n >= min_requests
                else f"{track} answered {0 if n is None else round(n)} predict requests in the window "
                f"(fewer than min_requests {min_requests})"
            )
        if obs.unavailable:
            return inconclusive(obs.unavailable)
        if enough["canary"]:
            return inconclusive(enough["canary"])
        if check.kind == "prediction_shift":
            if enough["stable"]:
                return inconclusive(enough["stable"])
            canary, stable = obs.shift(), Reading(None, "")
        elif check.kind == "query":
            canary = obs.query(check.query or "", "canary")
            stable = obs.query(check.query or "", "stable")
        else:
            canary = obs.reading(check.kind, "canary")
            stable = obs.reading(check.kind, "stable") if not enough["stable"] else Reading(None, enough["stable"])
        c, s = _number(canary.value), _number(stable.value)
        if c is None:
            return inconclusive(canary.detail or "no data for the canary", None, s)
        ok, why = condition.evaluate(check.success_condition, c, s)
        if ok is None:
            if why == "stable has no value" and stable.detail:
                why = stable.detail
            return inconclusive(why, c, s)
        figures = canary.detail or f"canary {_fmt(c)}"
        if check.kind != "prediction_shift":
            figures += f", stable {_fmt(s)}"
        verdict = "holds" if ok else "does not hold"
        return Measurement(
            check.name, check.kind, c, s, "pass" if ok else "fail", f"{figures}: {check.success_condition} {verdict}"
        )
    except Exception as exc:  # the contract: an analysis never raises on data; say what happened instead
        return inconclusive(f"cannot measure: {type(exc).__name__}: {' '.join(str(exc).split())}"[:300])


def _schedule(metrics: list[MetricCheck]) -> list[tuple[float, list[MetricCheck]]]:
    times: dict[float, list[MetricCheck]] = {}
    for m in metrics:
        for k in range(m.count):
            times.setdefault(round(k * m.interval_s, 6), []).append(m)
    return sorted(times.items(), key=lambda item: item[0])


def verdict_of(template: str, metrics: list[MetricCheck], measurements: list[Measurement]) -> AnalysisResult:
    """The run's verdict from its measurements: fail when a metric's failures exceed its failure_limit,
    else inconclusive when a measurement was, else pass."""
    failed, unsure = [], []
    for m in metrics:
        mine = [x for x in measurements if x.metric == m.name]
        fails = [x for x in mine if x.outcome == "fail"]
        if len(fails) > m.failure_limit:
            failed.append(f"{m.name}: {fails[-1].detail}")
        elif any(x.outcome == "inconclusive" for x in mine):
            unsure.append(f"{m.name}: {next(x.detail for x in mine if x.outcome == 'inconclusive')}")
    if failed:
        return AnalysisResult(template, "fail", tuple(measurements), "failed: " + "; ".join(failed))
    if unsure:
        return AnalysisResult(template, "inconclusive", tuple(measurements), "inconclusive: " + "; ".join(unsure))
    return AnalysisResult(
        template, "pass", tuple(measurements), f"passed: {len(measurements)} measurements of {len(metrics)} metrics"
    )


def run_analysis(
    settings: Settings, template: str, canary: Canary, *, window_s: float, sleep: Callable[[float], None] = time.sleep
) -> AnalysisResult:
    """Measure canary vs stable over the last window_s seconds: from Prometheus at
    settings.monitor.prometheus_url when set (PromQL using each member's selector), otherwise from
    scrapes of the two members' metrics_url (two scrapes window_s apart, deltas, as `mlops monitor`
    does). Prometheus unreachable / no data / NaN -> inconclusive (never an exception)."""
    from ..errors import UsageError

    config = settings.canary_analysis
    if template not in config.templates:
        raise UsageError(f"no analysis template {template!r}; known: {', '.join(sorted(config.templates))}")
    metrics = list(config.templates[template].metrics)
    timeout = settings.monitor.timeout_s
    prom = settings.monitor.prometheus_url
    source = PrometheusSource(prom, timeout) if prom else ScrapeSource(timeout, sleep)
    measurements: list[Measurement] = []
    clock = 0.0
    with source:
        for at, due in _schedule(metrics):
            if at > clock:
                sleep(at - clock)
                clock = at
            obs = source.observe(canary, window_s)
            clock += source.waited
            for check in due:
                measurements.append(measure(check, obs, config.min_requests))
            result = verdict_of(template, metrics, measurements)
            if result.verdict != "pass":
                return result
    return verdict_of(template, metrics, measurements)
