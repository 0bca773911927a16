"""deploy/monitoring/prometheus-adapter.yaml serves the HPA's custom metric from a series the server exports."""

from __future__ import annotations

import re

import yaml
from promql_tools import REPO, metric_names

from serving import metrics

ADAPTER = REPO / "deploy" / "monitoring" / "prometheus-adapter.yaml"


def adapter_query(template: str, series: str) -> str:
    """The query prometheus-adapter sends for one HPA: its Go template filled in as the adapter does."""
    return (
        template.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="mlops-prod",pod=~"iris-abc|iris-def"')
        .replace("<<.GroupBy>>", "pod")
    )


def test_the_adapter_rule_reads_a_series_the_server_exports_and_names_the_hpa_metric() -> None:
    (rule,) = yaml.safe_load(ADAPTER.read_text())["rules"]
    (series,) = metric_names(rule["seriesQuery"])
    assert series == metrics.HTTP_REQUESTS  # mlops_http_requests_total: serving/metrics.py exports it
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    query = adapter_query(rule["metricsQuery"], series)
    assert metric_names(query) == {series}  # it parses, and reads only that series
    assert "rate(" in query
    # every predict route counts (route label = template), health and metrics routes do not
    route = re.search(r'route=~"((?:[^"\\]|\\.)*)"', query).group(1).replace("\\\\", "\\")
    for counted in (
        "/v1/predict",
        "/v1/models/{name}:predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        assert re.fullmatch(route, counted), counted
    for ignored in ("/v2/health/ready", "/health/ready", "/metrics", "/v2/models/{name}"):
        assert not re.fullmatch(route, ignored), ignored
    # the name the HPA asks for is the one the adapter serves: in the shipped example and the README
    name = rule["name"]["as"]
    example = yaml.safe_load((REPO / "deploy" / "kustomize" / "mlops.yaml").read_text())
    assert example["kubernetes"]["custom_metric"]["name"] == name
    assert f"{{name: {name}," in (REPO / "docs" / "kubernetes.md").read_text()  # the reference moved from README.md
    assert (
        "mlops_requests_per_second"
        not in (REPO / "README.md").read_text() + (REPO / "docs" / "kubernetes.md").read_text()
    )  # the old name nobody serves
