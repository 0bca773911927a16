"""Writes the dashboards in grafana/dashboards/ (provisioning-ready JSON): `python grafana/generate.py`.

The JSON files are what Grafana loads; this script is how they are edited, so that every panel
follows the same conventions: a `datasource` variable (no `__inputs`, so a file provider loads them
as they are), `namespace` and `job` variables over the runtime's own `mlops_model_info`, and
PromQL on metric names the serving runtime exports (serving/metrics.py, docs/bundle.md) plus,
on the resources dashboard, kube-state-metrics and cAdvisor names. A unit test checks that the
files are this script's output; an integration test runs every expression against a real
Prometheus scraping real servers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", job=~"$job"'
# every predict route: /v1/predict, KServe v1 and Open Inference Protocol v2 infer (route label = template)
PREDICT_ROUTES = r"/v1/predict|/v1/models/\\{name\\}:predict|/v2/models/\\{name\\}(/versions/\\{version\\})?/infer"
PREDICT = f'{SEL}, route=~"{PREDICT_ROUTES}"'
RATE = "$__rate_interval"
EPSILON = "0.0001"  # as serving.modules.drift.EPSILON


def psi(window: str) -> str:
    """PSI per (namespace, job, feature) over `window`: the recording rule of deploy/monitoring."""
    observed = (
        f"clamp_min(sum by (namespace, job, feature, bin) (increase(mlops_drift_observations_total{{{SEL}}}[{window}]))"
        f" / on (namespace, job, feature) group_left sum by (namespace, job, feature) "
        f"(increase(mlops_drift_observations_total{{{SEL}}}[{window}])), {EPSILON})"
    )
    reference = f"max by (namespace, job, feature, bin) (mlops_drift_reference_share{{{SEL}}})"
    return (
        f"sum by (namespace, job, feature) (({observed} - on (namespace, job, feature, bin) {reference})"
        f" * ln({observed} / on (namespace, job, feature, bin) {reference}))"
    )


def variables(extra: list[dict] | None = None) -> dict:
    def query_var(name: str, label: str, series: str = "mlops_model_info") -> dict:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "refresh": 2,
            "query": {"query": f"label_values({series}, {name})", "refId": name},
            "definition": f"label_values({series}, {name})",
            "includeAll": True,
            "multi": True,
            "allValue": ".*" if name == "namespace" else ".+",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
                "regex": "",
            },
            query_var("namespace", "Namespace"),
            query_var(
                "job", "Service", 'mlops_model_info{namespace=~"$namespace"}'
            ),  # the services of those namespaces
            *(extra or []),
        ]
    }


class Board:
    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "id": len(self.panels) + 1,
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def panel(
        self,
        kind: str,
        title: str,
        targets: list[tuple[str, str]],
        *,
        w: int = 12,
        h: int = 8,
        unit: str = "short",
        description: str = "",
        **options: object,
    ) -> None:
        if self.x + w > 24:
            self._newline()
        panel = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": DS,
                    "expr": expr,
                    "legendFormat": legend,
                    "range": kind != "stat",
                    "instant": kind == "stat",
                }
                for i, (expr, legend) in enumerate(targets)
            ],
            "options": options,
        }
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)


def dashboard(uid: str, title: str, board: Board, description: str, extra_vars: list[dict] | None = None) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["mlops"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "graphTooltip": 1,
        "templating": variables(extra_vars),
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["mlops"], "asDropdown": True, "title": "mlops"}],
        "panels": board.panels,
    }


def service() -> dict:
    b = Board()
    b.row("Overview")
    b.panel(
        "stat",
        "Requests/s",
        [(f"sum by (job) (rate(mlops_http_requests_total{{{PREDICT}}}[{RATE}]))", "{{job}}")],
        w=4,
        h=4,
        unit="reqps",
    )
    b.panel(
        "stat",
        "Error ratio (5xx)",
        [
            (
                f'(sum by (job) (rate(mlops_http_requests_total{{{PREDICT}, status=~"5.."}}[{RATE}])) or 0 * '
                f"sum by (job) (rate(mlops_http_requests_total{{{PREDICT}}}[{RATE}]))) / "
                f"sum by (job) (rate(mlops_http_requests_total{{{PREDICT}}}[{RATE}]))",
                "{{job}}",
            )
        ],
        w=4,
        h=4,
        unit="percentunit",
    )
    b.panel(
        "stat",
        "p95 latency",
        [
            (
                f"histogram_quantile(0.95, sum by (job, le) (rate(mlops_http_request_duration_seconds_bucket{{{PREDICT}}}[{RATE}])))",
                "{{job}}",
            )
        ],
        w=4,
        h=4,
        unit="s",
    )
    b.panel("stat", "In flight", [(f"sum by (job) (mlops_http_requests_in_flight{{{SEL}}})", "{{job}}")], w=4, h=4)
    b.panel(
        "stat",
        "Replicas serving",
        [(f"count by (job) (mlops_model_info{{{SEL}}})", "{{job}}")],
        w=4,
        h=4,
        description="Pods exporting mlops_model_info: each pod is one server process.",
    )
    b.panel(
        "table",
        "Model",
        [(f"max by (job, name, version, framework, sha256) (mlops_model_info{{{SEL}}})", "")],
        w=4,
        h=4,
    )
    b.panel(
        "timeseries",
        "Requests by route and status",
        [(f"sum by (route, status) (rate(mlops_http_requests_total{{{SEL}}}[{RATE}]))", "{{route}} {{status}}")],
        unit="reqps",
    )
    b.panel(
        "timeseries",
        "Predict latency",
        [
            (
                f"histogram_quantile({q}, sum by (le) (rate(mlops_http_request_duration_seconds_bucket{{{PREDICT}}}[{RATE}])))",
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "In flight and shed",
        [
            (f"sum by (job) (mlops_http_requests_in_flight{{{SEL}}})", "in flight {{job}}"),
            (f"sum by (job) (rate(mlops_batch_queue_rejected_total{{{SEL}}}[{RATE}]))", "shed (503)/s {{job}}"),
        ],
    )
    b.panel(
        "timeseries",
        "Error ratio by status",
        [
            (
                f'sum by (status) (rate(mlops_http_requests_total{{{PREDICT}, status!~"2.."}}[{RATE}])) / ignoring (status) '
                f"group_left sum (rate(mlops_http_requests_total{{{PREDICT}}}[{RATE}]))",
                "{{status}}",
            )
        ],
        unit="percentunit",
    )
    b.row("Modules and batches")
    b.panel(
        "timeseries",
        "Time per module and batch (p95)",
        [
            (
                f"histogram_quantile(0.95, sum by (module, le) (rate(mlops_module_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                "{{module}}",
            )
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "Mean time per module and batch",
        [
            (
                f"sum by (module) (rate(mlops_module_duration_seconds_sum{{{SEL}}}[{RATE}])) / "
                f"sum by (module) (rate(mlops_module_duration_seconds_count{{{SEL}}}[{RATE}]))",
                "{{module}}",
            )
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "Batch size",
        [
            (
                f"histogram_quantile({q}, sum by (le) (rate(mlops_batch_size_rows_bucket{{{SEL}}}[{RATE}])))",
                f"rows p{int(q * 100)}",
            )
            for q in (0.5, 0.95)
        ]
        + [
            (
                f"sum (rate(mlops_batch_size_requests_sum{{{SEL}}}[{RATE}])) / sum (rate(mlops_batch_size_requests_count{{{SEL}}}[{RATE}]))",
                "requests (mean)",
            )
        ],
    )
    b.panel(
        "timeseries",
        "Queue wait (p95)",
        [
            (
                f"histogram_quantile(0.95, sum by (le) (rate(mlops_batch_queue_wait_seconds_bucket{{{SEL}}}[{RATE}])))",
                "p95",
            )
        ],
        unit="s",
    )
    b.row("Predictions")
    b.panel(
        "timeseries",
        "Predictions by label (classification)",
        [(f"sum by (label) (rate(mlops_predictions_total{{{SEL}}}[{RATE}]))", "{{label}}")],
        unit="ops",
    )
    b.panel(
        "bargauge",
        "Label shares over the range (classification)",
        [
            (
                f"sum by (label) (increase(mlops_predictions_total{{{SEL}}}[$__range])) / ignoring (label) group_left "
                f"sum (increase(mlops_predictions_total{{{SEL}}}[$__range]))",
                "{{label}}",
            )
        ],
        unit="percentunit",
    )
    b.panel(
        "heatmap",
        "Predicted values (regression)",
        [(f"sum by (le) (increase(mlops_prediction_value_bucket{{{SEL}}}[{RATE}]))", "{{le}}")],
        calculate=False,
        yAxis={"unit": "short"},
    )
    # no _sum: prometheus-client leaves it out of histograms with negative buckets (the default ones)
    b.panel(
        "timeseries",
        "Predicted value quantiles (regression)",
        [
            (
                f"histogram_quantile({q}, sum by (job, le) (rate(mlops_prediction_value_bucket{{{SEL}}}[{RATE}])))",
                f"p{int(q * 100)} {{{{job}}}}",
            )
            for q in (0.1, 0.5, 0.9)
        ],
    )
    canary_row(b)
    return dashboard(
        "mlops-service",
        "mlops / Service",
        b,
        "Request rate, errors, latency, in-flight requests, replicas, module times, batches and "
        "the prediction distribution of mlops model services.",
    )


def canary_row(b: Board) -> None:
    """Canary vs stable: the canary analysis' figures per track, from the recording rules of
    deploy/monitoring (group mlops.canary, 1m windows, one canary release per namespace)."""
    ns = 'namespace=~"$namespace"'
    b.row("Canary vs stable")
    b.panel(
        "timeseries",
        "Error ratio (5xx) by track",
        [(f"namespace_track:mlops_http_errors:ratio1m{{{ns}}}", "{{namespace}} {{track}}")],
        w=8,
        unit="percentunit",
        description="5xx answers / predict requests over 1 minute, per track (the analysis' error_ratio).",
    )
    b.panel(
        "timeseries",
        "p99 latency by track",
        [(f"namespace_track:mlops_http_request_duration_seconds:p99_1m{{{ns}}}", "{{namespace}} {{track}}")],
        w=8,
        unit="s",
        description="p99 of the predict routes' latency over 1 minute, per track (the analysis' latency_p99).",
    )
    b.panel(
        "timeseries",
        "Predict requests by track (1m)",
        [(f"namespace_track:mlops_http_requests:increase1m{{{ns}}}", "{{namespace}} {{track}}")],
        w=8,
        description="Below canary_analysis.min_requests in a window, a measurement is inconclusive.",
    )
    b.panel(
        "timeseries",
        "PSI per feature by track",
        [(f"namespace_track_feature:mlops_drift_psi:1m{{{ns}}}", "{{track}} {{feature}}")],
        w=8,
        description="Input drift against the reference over 1 minute, per track; the analysis judges the worst feature.",
        thresholds={
            "mode": "absolute",
            "steps": [
                {"color": "green", "value": None},
                {"color": "orange", "value": 0.1},
                {"color": "red", "value": 0.25},
            ],
        },
    )
    b.panel(
        "bargauge",
        "Class shares by track",
        [(f"namespace_track_label:mlops_predictions:share1m{{{ns}}}", "{{track}} {{label}}")],
        w=8,
        unit="percentunit",
        description="Each class' share of the last minute's predictions, canary beside stable.",
    )
    b.panel(
        "timeseries",
        "Prediction shift (TVD canary vs stable)",
        [(f"namespace:mlops_canary_prediction_shift:tvd1m{{{ns}}}", "{{namespace}}")],
        w=8,
        description="Total-variation distance between the canary's and stable's class shares (0 same, 1 disjoint); "
        "the built-in analysis fails above 0.2.",
    )


WINDOW = {
    "name": "window",
    "label": "PSI window",
    "type": "custom",
    "query": "15m,1h,6h,24h",
    "current": {"selected": True, "text": "1h", "value": "1h"},
    "hide": 0,
    "options": [{"selected": w == "1h", "text": w, "value": w} for w in ("15m", "1h", "6h", "24h")],
}


def drift() -> dict:
    b = Board()
    b.row("Drift (PSI per feature)")
    b.panel(
        "timeseries",
        "PSI per feature over $window",
        [(psi("$window"), "{{job}} {{feature}}")],
        w=16,
        h=9,
        description="Population stability index of each watched feature against the reference data: "
        "< 0.1 stable, 0.1-0.25 moderate shift (warning), > 0.25 significant shift (critical).",
        thresholds={
            "mode": "absolute",
            "steps": [
                {"color": "green", "value": None},
                {"color": "orange", "value": 0.1},
                {"color": "red", "value": 0.25},
            ],
        },
    )
    b.panel("bargauge", "PSI now", [(psi("$window"), "{{feature}}")], w=8, h=9)
    # per service (namespace, job): two services with a feature of the same name are not mixed up
    b.panel(
        "timeseries",
        "Observed share per bin",
        [
            (
                f"sum by (namespace, job, feature, bin, upper) (increase(mlops_drift_observations_total{{{SEL}}}[$window])) "
                f"/ ignoring (bin, upper) group_left "
                f"sum by (namespace, job, feature) (increase(mlops_drift_observations_total{{{SEL}}}[$window]))",
                "{{job}} {{feature}} ≤ {{upper}}",
            )
        ],
        unit="percentunit",
    )
    b.panel(
        "table",
        "Reference share per bin",
        [
            (
                f"max by (namespace, job, feature, bin, upper) (mlops_drift_reference_share{{{SEL}}})",
                "{{job}} {{feature}} ≤ {{upper}}",
            )
        ],
    )
    b.panel(
        "timeseries",
        "Values counted per feature",
        [
            (
                f"sum by (namespace, job, feature) (rate(mlops_drift_observations_total{{{SEL}}}[{RATE}]))",
                "{{job}} {{feature}}",
            )
        ],
        unit="ops",
    )
    b.row("Outliers")
    b.panel(
        "timeseries",
        "Outlying values by feature",
        [(f"sum by (namespace, job, feature) (rate(mlops_outliers_total{{{SEL}}}[{RATE}]))", "{{job}} {{feature}}")],
        unit="ops",
    )
    b.panel(
        "timeseries",
        "Outlier instances per row scored",
        [
            (
                f"sum by (namespace, job, reason) (rate(mlops_outlier_instances_total{{{SEL}}}[{RATE}])) "
                f"/ on (namespace, job) group_left "
                f"sum by (namespace, job) (rate(mlops_batch_size_rows_sum{{{SEL}}}[{RATE}]))",
                "{{job}} {{reason}}",
            )
        ],
        unit="percentunit",
    )
    return dashboard(
        "mlops-drift",
        "mlops / Drift and outliers",
        b,
        "Per-feature drift (PSI from the reference-quantile bins) and outliers of mlops model services.",
        [WINDOW],
    )


def resources() -> dict:
    # Pods that serve a model: the serving targets (labelled mlops_role="serving" by the scrape config or
    # ServiceMonitor, with namespace and pod labels; see deploy/monitoring/README.md). `up` is written on
    # every scrape, answered or not, so a pod that stopped answering (crash-looping, OOM) stays on the
    # panels; `and` keeps the left-hand value, whatever `up` is.
    pods = f'on (namespace, pod) up{{mlops_role="serving", {SEL}}}'
    b = Board()
    b.row("Resources (cAdvisor, kube-state-metrics)")
    b.panel(
        "timeseries",
        "CPU per pod (cores)",
        [
            (
                f'sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{container!="", container!="POD"}}[{RATE}])) '
                f"and {pods}",
                "{{pod}}",
            )
        ],
    )
    b.panel(
        "timeseries",
        "CPU throttled",
        [
            (
                f'sum by (namespace, pod) (rate(container_cpu_cfs_throttled_periods_total{{container!=""}}[{RATE}])) / '
                f'sum by (namespace, pod) (rate(container_cpu_cfs_periods_total{{container!=""}}[{RATE}])) and {pods}',
                "{{pod}}",
            )
        ],
        unit="percentunit",
    )
    b.panel(
        "timeseries",
        "Memory working set per pod",
        [
            (
                f'sum by (namespace, pod) (container_memory_working_set_bytes{{container!="", container!="POD"}}) and {pods}',
                "{{pod}}",
            )
        ],
        unit="bytes",
    )
    b.panel(
        "timeseries",
        "Memory limit per pod",
        [(f'sum by (namespace, pod) (kube_pod_container_resource_limits{{resource="memory"}}) and {pods}', "{{pod}}")],
        unit="bytes",
    )
    b.panel(
        "timeseries",
        "Container restarts (1h)",
        [(f"sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total[1h])) and {pods}", "{{pod}}")],
    )
    b.panel(
        "timeseries",
        "Pods ready",
        [(f"sum by (namespace, pod) (kube_pod_container_status_ready) and {pods}", "{{pod}}")],
    )
    return dashboard(
        "mlops-resources",
        "mlops / Resources",
        b,
        "CPU, memory and restarts of the pods serving mlops models (cAdvisor and kube-state-metrics).",
    )


DASHBOARDS = {"mlops-service.json": service, "mlops-drift.json": drift, "mlops-resources.json": resources}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


if __name__ == "__main__":
    out = HERE / "dashboards"
    for name, text in render().items():
        (out / name).write_text(text, encoding="utf-8")
        print(out / name, file=sys.stderr)
