"""Canary analysis without servers: the condition evaluator (hostile input too), PSI/TVD, the
quantile, each kind's measurement, the verdict rules (failure_limit, count, interval, inconclusive),
and run_analysis' scrape fallback against a small HTTP double serving /metrics texts."""

from __future__ import annotations

import http.server
import math
import threading
from collections.abc import Iterator

import pytest

from mlops_cli.canary import condition
from mlops_cli.canary.analysis import (
    DEFAULT_TEMPLATE,
    AnalysisTemplate,
    Measurement,
    MetricCheck,
    measure,
    run_analysis,
    verdict_of,
)
from mlops_cli.canary.figures import Observation, Reading, psi, queries, tvd, worst_psi
from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError
from mlops_cli.metrics_text import bucket_counts, histogram_quantile, parse_metrics
from mlops_cli.targets import Canary, CanaryMember

# --- the condition ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,result,stable,expected",
    [
        ("result <= max(stable * 2, 0.01)", 0.005, 0.0, True),
        ("result <= max(stable * 2, 0.01)", 0.05, 0.01, False),
        ("result < 0.25", 0.3, None, False),
        ("0 <= result < 1 and not result == 0.5", 0.4, None, True),
        ("result - stable <= 0.1 or abs(result) < 1e-9", 0.0, 5.0, True),
        ("min(result, stable, 3) == stable % 2", 1.0, 1.0, True),
        ("-result > -1", 0.5, None, True),
        ("result / stable < 1.5", 1.0, 1.0, True),
    ],
)
def test_condition_evaluates(text: str, result: float, stable, expected: bool) -> None:
    assert condition.evaluate(text, result, stable) == (expected, "")


@pytest.mark.parametrize(
    "hostile,reason",
    [
        ("__import__('os').system('touch /tmp/pwned')", "only min(), max() and abs() can be called"),
        ("result.__class__.__bases__", "Attribute is not allowed"),
        ("().__class__", "Attribute is not allowed"),
        ("[x for x in ()]", "ListComp is not allowed"),
        ("(lambda: 1)()", "only min(), max() and abs() can be called"),
        ("open('/etc/passwd')", "only min(), max() and abs() can be called"),
        ("eval('1')", "only min(), max() and abs() can be called"),
        ("result ** 99999999999", "operator Pow is not allowed"),
        ("'a' * 10", "only numbers are allowed as constants"),
        ("result if stable else 1", "IfExp is not allowed"),
        ("x < 1", "unknown name 'x'"),
        ("globals()", "only min(), max() and abs() can be called"),
        ("max(*[1, 2])", "max() takes plain arguments only"),
        ("abs(result, 2)", "abs() takes one argument"),
        ("max(result)", "max() takes two or more arguments"),
        ("result < 1; import os", "not a valid expression"),
        ("(result := 1)", "NamedExpr is not allowed"),
        ("result in (1, 2)", "only < <= > >= == != comparisons are allowed"),
        ("True", "only numbers are allowed as constants"),
        ("(" * 300 + "1" + ")" * 300, "longer than 500 characters"),
        ("(" * 240 + "1" + ")" * 240, "not a valid expression"),
        ("1 +" * 120 + " 1", "more than 200 parts"),
        ("", "empty"),
    ],
)
def test_condition_refuses_hostile_input(hostile: str, reason: str, tmp_path) -> None:
    with pytest.raises(condition.ConditionError) as info:
        condition.evaluate(hostile, 1.0, 1.0)
    assert reason in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_condition_without_a_value_or_dividing_by_zero_is_undecided() -> None:
    assert condition.evaluate("result <= stable * 2", 0.1, None) == (None, "stable has no value")
    assert condition.evaluate("result <= 1", math.nan, 0.0) == (None, "result has no value")
    assert condition.evaluate("result / stable < 2", 1.0, 0.0) == (None, "division by zero")
    assert condition.evaluate("result < 1", 0.5, None) == (True, "")  # stable unused: not needed


# --- the figures ------------------------------------------------------------------------------------


def test_psi_matches_the_runtime_and_clamps_empty_bins() -> None:
    from serving.modules.drift import psi as runtime_psi

    shares = [0.25, 0.25, 0.25, 0.25]
    assert psi([25, 25, 25, 25], shares) == pytest.approx(0.0)
    counts = [0, 10, 30, 60]
    assert psi(counts, shares) == pytest.approx(runtime_psi(counts, shares))
    by_hand = sum((max(c / 100, 1e-4) - 0.25) * math.log(max(c / 100, 1e-4) / 0.25) for c in counts)
    assert psi(counts, shares) == pytest.approx(by_hand) and by_hand > 1
    assert psi([0, 0, 0, 0], shares) is None
    assert worst_psi({"a": 0.1, "b": 0.41, "c": None}, "canary") == Reading(0.41, "PSI b 0.41")
    assert worst_psi({"a": None}, "canary").value is None


def test_tvd_is_half_the_l1_distance_of_the_shares() -> None:
    assert tvd({"a": 10, "b": 10}, {"a": 50, "b": 50}) == pytest.approx(0.0)
    assert tvd({"a": 10, "b": 0, "c": 20}, {"a": 10, "b": 10, "c": 10}) == pytest.approx(1 / 3)
    assert tvd({"a": 5}, {"b": 7}) == pytest.approx(1.0)
    assert tvd({"a": 0}, {"a": 3}) is None


def test_histogram_quantile_as_prometheus_computes_it() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 9 / 10)
    assert histogram_quantile(0.99, {0.1: 0.0, 1.0: 0.0, math.inf: 10.0}) == 1.0  # in +Inf: the highest bound
    assert math.isnan(histogram_quantile(0.99, {0.1: 0.0, math.inf: 0.0}))
    assert bucket_counts({1.0: 3.0, 2.0: 5.0, math.inf: 9.0}) == {1.0: 3.0, 2.0: 2.0, math.inf: 4.0}


def test_queries_place_the_selector_and_count_every_predict_route() -> None:
    q = queries('track="canary",job="mlops-prod"', "60s")
    assert 'mlops_http_requests_total{track="canary",job="mlops-prod", route=~"/v1/predict|' in q["requests"]
    assert "[60s]" in q["error_ratio"] and 'status=~"5.."' in q["error_ratio"]
    assert q["latency_p99"].startswith(
        "histogram_quantile(0.99, sum by (le) (rate(mlops_http_request_duration_seconds_bucket{"
    )
    assert queries("", "5s")["predictions"] == "sum by (label) (increase(mlops_predictions_total{}[5s]))"


# --- measurements and verdicts, on an observation double -----------------------------------------------

NO_SHIFT = Reading(None, "none")


class FixedObservation(Observation):
    """An observation double: fixed figures per track."""

    def __init__(self, requests: dict, readings: dict, shift: Reading = NO_SHIFT, unavailable=None):
        self._requests, self._readings, self._shift = requests, readings, shift
        self.unavailable = unavailable

    def requests(self, track):
        return self._requests.get(track)

    def reading(self, kind, track):
        return self._readings[(kind, track)]

    def shift(self):
        return self._shift


def check(kind: str, cond: str, **kw) -> MetricCheck:
    return MetricCheck(name=kind.replace("_", "-"), kind=kind, success_condition=cond, **kw)


def test_measurements_pass_fail_and_inconclusive() -> None:
    obs = FixedObservation(
        {"canary": 100, "stable": 900},
        {
            ("error_ratio", "canary"): Reading(0.05, ""),
            ("error_ratio", "stable"): Reading(0.01, ""),
            ("input_drift", "canary"): Reading(0.41, "PSI petal_width 0.41"),
            ("input_drift", "stable"): Reading(0.02, "PSI x 0.02"),
            ("latency_p99", "canary"): Reading(None, "no latency figures"),
            ("latency_p99", "stable"): Reading(0.1, ""),
        },
        shift=Reading(0.33, "TVD of predictions 0.33"),
    )
    m = measure(check("error_ratio", "result <= max(stable * 2, 0.01)"), obs, 20)
    assert (m.outcome, m.canary, m.stable) == ("fail", 0.05, 0.01)
    assert m.detail == "canary 0.05, stable 0.01: result <= max(stable * 2, 0.01) does not hold"
    m = measure(check("input_drift", "result <= 0.25"), obs, 20)
    assert m.outcome == "fail" and m.detail.startswith("PSI petal_width 0.41, stable 0.02")
    m = measure(check("prediction_shift", "result <= 0.5"), obs, 20)
    assert (m.outcome, m.canary, m.stable) == ("pass", 0.33, None)
    assert m.detail == "TVD of predictions 0.33: result <= 0.5 holds"
    m = measure(check("latency_p99", "result < 1"), obs, 20)
    assert (m.outcome, m.detail) == ("inconclusive", "no latency figures")
    few = measure(check("error_ratio", "result < 1"), obs, 101)
    assert few.outcome == "inconclusive" and "canary answered 100 predict requests" in few.detail
    # the stable side below min_requests: a condition that needs stable is undecided, with that reason
    lopsided = FixedObservation({"canary": 100, "stable": 3}, obs._readings)
    m = measure(check("error_ratio", "result <= stable * 2"), lopsided, 20)
    assert m.outcome == "inconclusive" and "stable answered 3 predict requests" in m.detail
    assert measure(check("error_ratio", "result < 0.1"), lopsided, 20).outcome == "pass"
    gone = FixedObservation({}, {}, unavailable="Prometheus at http://127.0.0.1:9 unreachable: ConnectError")
    m = measure(check("error_ratio", "result < 1"), gone, 20)
    assert (m.outcome, m.detail) == ("inconclusive", gone.unavailable)
    nan = FixedObservation(
        {"canary": 100, "stable": 100},
        {("error_ratio", "canary"): Reading(math.nan, ""), ("error_ratio", "stable"): Reading(0.0, "")},
    )
    assert measure(check("error_ratio", "result < 1"), nan, 20).outcome == "inconclusive"

    class Broken(FixedObservation):
        def reading(self, kind, track):
            raise KeyError("le")

    m = measure(check("error_ratio", "result < 1"), Broken({"canary": 100, "stable": 100}, {}), 20)
    assert m.outcome == "inconclusive" and m.detail == "cannot measure: KeyError: 'le'"


def meas(metric: str, outcome: str) -> Measurement:
    return Measurement(metric, "error_ratio", 0.0, 0.0, outcome, f"{metric} {outcome}")  # type: ignore[arg-type]


def test_verdict_fails_when_failures_exceed_the_limit_as_argo_rollouts_counts() -> None:
    a = check("error_ratio", "result < 1", failure_limit=1, count=3)
    b = check("latency_p99", "result < 1")
    assert (
        verdict_of(
            "t",
            [a, b],
            [
                meas("error-ratio", "fail"),
                meas("latency-p99", "pass"),
                meas("error-ratio", "pass"),
                meas("error-ratio", "pass"),
            ],
        ).verdict
        == "pass"
    )
    r = verdict_of("t", [a, b], [meas("error-ratio", "fail"), meas("error-ratio", "fail")])
    assert r.verdict == "fail" and r.reason == "failed: error-ratio: error-ratio fail"
    r = verdict_of("t", [a, b], [meas("latency-p99", "inconclusive"), meas("error-ratio", "pass")])
    assert r.verdict == "inconclusive" and r.reason == "inconclusive: latency-p99: latency-p99 inconclusive"
    r = verdict_of("t", [a, b], [meas("latency-p99", "inconclusive"), meas("latency-p99", "fail")])
    assert r.verdict == "fail"  # a failure outweighs an inconclusive
    assert r.to_dict()["measurements"][1] == {
        "metric": "latency-p99",
        "kind": "error_ratio",
        "canary": 0.0,
        "stable": 0.0,
        "outcome": "fail",
        "detail": "latency-p99 fail",
    }


# --- settings ------------------------------------------------------------------------------------------


def test_the_default_template_has_the_five_kinds_and_a_user_template_keeps_it() -> None:
    settings = load_settings(None, {}, environ={})
    kinds = {m.kind for m in settings.canary_analysis.templates["default"].metrics}
    assert kinds == {"error_ratio", "latency_p99", "input_drift", "prediction_shift", "outlier_rate"}
    mine = {
        "metrics": [
            {
                "name": "q",
                "kind": "query",
                "success_condition": "result < 1",
                "query": "sum(rate(x{{selector}}[{window}]))",
            }
        ]
    }
    settings = load_settings(None, {"canary_analysis": {"templates": {"mine": mine}}}, environ={})
    assert set(settings.canary_analysis.templates) == {"default", "mine"}
    assert settings.canary_analysis.templates["default"] == DEFAULT_TEMPLATE


@pytest.mark.parametrize(
    "metric,message",
    [
        ({"kind": "nope"}, "canary_analysis.templates.t.metrics.0.kind: Input should be"),
        (
            {"success_condition": "result < (1"},
            "canary_analysis.templates.t.metrics.0.success_condition: not a valid expression",
        ),
        ({"success_condition": "__import__('os')"}, "success_condition: only min(), max() and abs() can be called"),
        ({"kind": "query"}, "canary_analysis.templates.t.metrics.0: metric 'm' of kind query needs a query"),
        ({"query": "up"}, "query is only for kind query"),
        ({"kind": "prediction_shift", "success_condition": "result < stable"}, "cannot use `stable`"),
        ({"count": 0}, "canary_analysis.templates.t.metrics.0.count: Input should be greater than or equal to 1"),
    ],
)
def test_bad_templates_are_one_line_config_errors_naming_the_key(tmp_path, metric: dict, message: str) -> None:
    import yaml

    body = {"name": "m", "kind": "error_ratio", "success_condition": "result < 1", **metric}
    path = tmp_path / "mlops.yaml"
    path.write_text(yaml.safe_dump({"canary_analysis": {"templates": {"t": {"metrics": [body]}}}}))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(info.value)


# --- run_analysis over real HTTP: a double serving successive /metrics texts ------------------------------


def metrics_text(
    requests: int, errors: int = 0, labels: dict | None = None, slow: int = 0, drift: list[int] | None = None
) -> str:
    """A /metrics page of the runtime's series (names as serving/metrics.py exports them)."""
    fast = requests - slow
    lines = [
        "# TYPE mlops_http_requests_total counter",
        f'mlops_http_requests_total{{route="/v1/predict",method="POST",status="200"}} {requests - errors}',
        f'mlops_http_requests_total{{route="/v2/models/{{name}}/infer",method="POST",status="500"}} {errors}',
        'mlops_http_requests_total{route="/metrics",method="GET",status="500"} 1000',
        "# TYPE mlops_http_request_duration_seconds histogram",
    ]
    for le, n in (("0.01", fast), ("1.0", requests), ("+Inf", requests)):
        lines.append(f'mlops_http_request_duration_seconds_bucket{{route="/v1/predict",method="POST",le="{le}"}} {n}')
    lines += ["# TYPE mlops_predictions_total counter"]
    lines += [f'mlops_predictions_total{{label="{k}"}} {v}' for k, v in (labels or {}).items()]
    lines += ["# TYPE mlops_drift_observations_total counter", "# TYPE mlops_drift_reference_share gauge"]
    for b, n in enumerate(drift or [0, 0]):
        lines.append(f'mlops_drift_observations_total{{feature="f",bin="{b}",upper="{b}"}} {n}')
        lines.append(f'mlops_drift_reference_share{{feature="f",bin="{b}",upper="{b}"}} 0.5')
    lines += [
        "# TYPE mlops_batch_size_rows histogram",
        f"mlops_batch_size_rows_sum {requests}",
        f"mlops_batch_size_rows_count {requests}",
    ]
    return "\n".join(lines) + "\n"


class MetricsDouble:
    """An HTTP double of a member's /metrics: each GET answers the next text of its list (the last one repeats)."""

    def __init__(self, texts: list[str]):
        self.texts, self.hits = texts, 0
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = double.texts[min(double.hits, len(double.texts) - 1)].encode()
                double.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def doubles() -> Iterator[list[MetricsDouble]]:
    made: list[MetricsDouble] = []
    yield made
    for d in made:
        d.close()


def canary_of(stable_url: str, canary_url: str) -> Canary:
    return Canary(
        env="prod",
        url="http://127.0.0.1:1",
        weight=10,
        stable=CanaryMember("stable", "http://s", stable_url, 'track="stable"'),
        canary=CanaryMember("canary", "http://c", canary_url, 'track="canary"'),
    )


def run(doubles, stable: list[str], canary: list[str], template: dict, sleeps: list, min_requests: int = 20):
    s, c = MetricsDouble(stable), MetricsDouble(canary)
    doubles += [s, c]
    settings = load_settings(
        None, {"canary_analysis": {"templates": {"t": template}, "min_requests": min_requests}}, environ={}
    )
    return run_analysis(settings, "t", canary_of(s.url, c.url), window_s=5, sleep=sleeps.append), s, c


def test_scrape_fallback_measures_deltas_and_the_default_template_passes_a_good_canary(doubles) -> None:
    sleeps: list[float] = []
    stable = [
        metrics_text(1000, 10, {"a": 500, "b": 500}, drift=[500, 500]),
        metrics_text(1900, 19, {"a": 950, "b": 950}, drift=[950, 950]),
    ]
    canary = [metrics_text(0, 0, {"a": 0, "b": 0}), metrics_text(100, 1, {"a": 48, "b": 52}, drift=[52, 48])]
    result, s, c = run(doubles, stable, canary, DEFAULT_TEMPLATE.model_dump(), sleeps)
    assert result.verdict == "pass", result.reason
    assert sleeps == [5] and s.hits == c.hits == 2
    by = {m.metric: m for m in result.measurements}
    assert by["error-ratio"].canary == pytest.approx(0.01) and by["error-ratio"].stable == pytest.approx(0.01)
    assert by["prediction-shift"].canary == pytest.approx(0.02)
    assert by["input-drift"].canary == pytest.approx(psi([52, 48], [0.5, 0.5]))
    assert by["latency-p99"].canary == pytest.approx(0.01 * 0.99)
    assert by["outlier-rate"].canary == 0.0
    assert result.reason == "passed: 5 measurements of 5 metrics"


def test_scrape_fallback_fails_a_shifted_canary_with_the_reason(doubles) -> None:
    sleeps: list[float] = []
    stable = [metrics_text(0, labels={"a": 0, "b": 0}), metrics_text(900, labels={"a": 450, "b": 450})]
    canary = [metrics_text(0, labels={"a": 0, "b": 0}), metrics_text(100, labels={"a": 10, "b": 90}, slow=50)]
    result, _, _ = run(doubles, stable, canary, DEFAULT_TEMPLATE.model_dump(), sleeps)
    assert result.verdict == "fail"
    failed = {m.metric for m in result.measurements if m.outcome == "fail"}
    assert failed == {"latency-p99", "prediction-shift"}
    assert "prediction-shift: TVD of predictions 0.4: result <= 0.2 does not hold" in result.reason


def test_count_interval_and_failure_limit(doubles) -> None:
    """count=3, interval 30 s, window 5 s: three pairs of scrapes; one failure tolerated, two are not."""
    template = {
        "metrics": [
            {
                "name": "errors",
                "kind": "error_ratio",
                "success_condition": "result < 0.05",
                "count": 3,
                "interval_s": 30,
                "failure_limit": 1,
            }
        ]
    }
    ok = [metrics_text(n * 100, 0) for n in range(6)]
    stable = ok
    bad_once = [
        metrics_text(0),
        metrics_text(100, 50),
        metrics_text(100, 50),
        metrics_text(200, 50),
        metrics_text(200, 50),
        metrics_text(300, 50),
    ]
    sleeps: list[float] = []
    result, s, _ = run(doubles, stable, bad_once, template, sleeps)
    assert [m.outcome for m in result.measurements] == ["fail", "pass", "pass"] and result.verdict == "pass"
    assert sleeps == [5, 25, 5, 25, 5] and s.hits == 6
    bad_twice = [metrics_text(0), metrics_text(100, 50), metrics_text(100, 50), metrics_text(200, 100)] + [
        metrics_text(200, 100)
    ] * 2
    sleeps = []
    result, _, _ = run(doubles, stable, bad_twice, template, sleeps)
    assert [m.outcome for m in result.measurements] == ["fail", "fail"] and result.verdict == "fail"
    assert sleeps == [5, 25, 5]  # stopped at the second failure: no third measurement


def test_no_traffic_or_a_dead_member_is_inconclusive_never_an_exception(doubles) -> None:
    template = {"metrics": [{"name": "errors", "kind": "error_ratio", "success_condition": "result < 0.05"}]}
    idle = [metrics_text(5), metrics_text(10)]
    result, _, _ = run(doubles, idle, idle, template, [])
    assert result.verdict == "inconclusive" and "canary answered 5 predict requests" in result.reason
    dead = canary_of("http://127.0.0.1:9/metrics", "http://127.0.0.1:9/metrics")
    settings = load_settings(
        None,
        {"canary_analysis": {"templates": {"t": AnalysisTemplate.model_validate(template).model_dump()}}},
        environ={},
    )
    result = run_analysis(settings, "t", dead, window_s=1, sleep=lambda s: None)
    assert (
        result.verdict == "inconclusive" and "cannot scrape the canary at http://127.0.0.1:9/metrics" in result.reason
    )
    prom = load_settings(None, {"monitor": {"prometheus_url": "http://127.0.0.1:9"}}, environ={})
    result = run_analysis(prom, "default", dead, window_s=1, sleep=lambda s: pytest.fail("no waiting"))
    assert result.verdict == "inconclusive" and "Prometheus at http://127.0.0.1:9 unreachable" in result.reason
    query = {"metrics": [{"name": "q", "kind": "query", "success_condition": "result < 1", "query": "up{{selector}}"}]}
    result, _, _ = run(doubles, idle, idle, query, [], min_requests=1)
    assert result.verdict == "inconclusive" and "needs a Prometheus" in result.reason


def test_the_shared_parser_counts_every_predict_route_and_sees_the_modules() -> None:
    m = parse_metrics(metrics_text(100, 7, {"a": 1}, drift=[3, 4]))
    assert (m["requests"], m["errors"]) == (100, 7)  # /metrics' 500s are not predict requests
    assert m["drift_module"] and not m["outlier_module"] and m["predictions"] == {"a": 1.0}
    assert m["latency"][math.inf] == 100


def test_the_recording_rules_are_the_analysis_queries_per_track() -> None:
    """deploy/monitoring's group mlops.canary records exactly what the analysis asks Prometheus, per
    (namespace, track) over 1m; the prediction shift's TVD is the analysis' tvd() in PromQL."""
    import yaml
    from promql_tools import RULES

    from mlops_cli.canary.figures import queries

    groups = {g["name"]: g for g in yaml.safe_load(RULES.read_text())["groups"]}
    rules = {r["record"]: " ".join(r["expr"].split()) for r in groups["mlops.canary"]["rules"]}
    q = queries('track!=""', "1m", ("namespace", "track"))
    expected = {
        "namespace_track:mlops_http_requests:increase1m": q["requests"],
        "namespace_track:mlops_http_errors:ratio1m": q["error_ratio"],
        "namespace_track:mlops_http_request_duration_seconds:p99_1m": q["latency_p99"],
        "namespace_track_feature:mlops_drift_psi:1m": q["input_drift"],
        "namespace_track:mlops_outlier_instances:ratio1m": q["outlier_rate"],
        "namespace_track_label:mlops_predictions:share1m": q["prediction_shares"],
    }
    assert {k: rules[k] for k in expected} == expected
    shares = "namespace_track_label:mlops_predictions:share1m"
    assert rules["namespace:mlops_canary_prediction_shift:tvd1m"] == (
        f'0.5 * sum by (namespace) (abs({shares}{{track="canary"}} - ignoring (track) {shares}{{track="stable"}}))'
    )
    assert set(rules) == {*expected, "namespace:mlops_canary_prediction_shift:tvd1m"}


def test_regression_prediction_shift_compares_the_prediction_histogram_buckets() -> None:
    from mlops_cli.canary.figures import ScrapedObservation
    from mlops_cli.metrics_text import delta

    def page(counts: tuple[int, int, int]) -> str:
        cumulative = [counts[0], counts[0] + counts[1], sum(counts)]
        return "# TYPE mlops_prediction_value histogram\n" + "".join(
            f'mlops_prediction_value_bucket{{le="{le}"}} {n}\n' for le, n in zip(("0.0", "10.0", "+Inf"), cumulative)
        )

    zero = parse_metrics(page((0, 0, 0)))
    stable = delta(zero, parse_metrics(page((10, 80, 10))))
    same = delta(zero, parse_metrics(page((1, 8, 1))))
    higher = delta(zero, parse_metrics(page((0, 20, 80))))
    assert ScrapedObservation({"canary": same, "stable": stable}).shift().value == pytest.approx(0.0)
    shifted = ScrapedObservation({"canary": higher, "stable": stable}).shift()
    assert shifted.value == pytest.approx(0.5 * (0.1 + 0.6 + 0.7)) and shifted.detail == "TVD of predictions 0.7"
    assert ScrapedObservation({"canary": zero | {"prediction_buckets": {}}, "stable": stable}).shift().value is None
