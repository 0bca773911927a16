"""Every PromQL expression of grafana/dashboards and deploy/monitoring, and the metric names in them.

Used by the monitoring tests: names are read with a real PromQL parser (promql-parser, a port of
Prometheus' own), never with a regular expression over the text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "grafana" / "dashboards"
RULES = REPO / "deploy" / "monitoring" / "mlops-rules.yml"
KUBE_DOUBLE = REPO / "tests" / "fixtures" / "monitoring" / "kube-metrics.prom"
PROMETHEUS_OWN = {"up"}  # series Prometheus writes itself for every target
# Grafana's variables as a query would see them: every namespace and service, a 1m rate window.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$__interval": "15s",
    "$window": "1h",
    "$namespace": ".*",
    "$job": ".+",
}
_COMPARISON = re.compile(r"(?<![=!<>~])(>=|<=|==|!=|>|<)\s*(?=[-+]?[\d.])")


@dataclass(frozen=True)
class Expr:
    where: str  # file and panel/rule
    kind: str  # panel | record | alert
    expr: str  # as written

    def query(self) -> str:
        """What to send to Prometheus: Grafana's variables filled in; an alert's threshold comparisons
        turned into `bool` ones, so the expression returns the compared series whether or not it fires."""
        text = self.expr
        for name, value in GRAFANA_VARS.items():
            text = text.replace(name, value)
        if self.kind == "alert":
            text = _COMPARISON.sub(lambda m: f"{m.group(1)} bool ", text)
        return text


def dashboard_exprs(directory: Path = DASHBOARDS, dashboards: dict[str, dict] | None = None) -> list[Expr]:
    if dashboards is None:
        dashboards = {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
    out = []
    for name, board in dashboards.items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append(Expr(f"{name}: {panel['title']} [{target['refId']}]", "panel", target["expr"]))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                query = var["query"]["query"]
                selector = re.fullmatch(r"label_values\((\w+(?:\{[^}]*\})?), *\w+\)", query)
                assert selector, f"{name}: variable {var['name']}: unexpected query {query}"
                out.append(Expr(f"{name}: variable {var['name']}", "panel", selector.group(1)))
    return out


def rule_groups(path: Path = RULES) -> list[dict]:
    return yaml.safe_load(path.read_text())["groups"]


def rule_exprs(path: Path = RULES) -> list[Expr]:
    out = []
    for group in rule_groups(path):
        for rule in group["rules"]:
            kind = "alert" if "alert" in rule else "record"
            label = rule.get("alert") or rule["record"]
            severity = rule.get("labels", {}).get("severity", "")
            out.append(Expr(f"{path.name}: {kind} {label} {severity}".strip(), kind, rule["expr"]))
    return out


def recorded_names(path: Path = RULES) -> set[str]:
    return {r["record"] for g in rule_groups(path) for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (plain names and `{__name__="..."}`)."""
    import promql_parser

    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def exported_names(metrics_text: str) -> set[str]:
    """Family and sample names in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def external_names() -> set[str]:
    """Names from outside the runtime: Prometheus' own, kube-state-metrics and cAdvisor (the double's file)."""
    names = exported_names(KUBE_DOUBLE.read_text())
    assert all(n.startswith(("kube_", "container_")) for n in names), names
    return names | PROMETHEUS_OWN


def unknown_metrics(exprs: list[Expr], exported: set[str]) -> dict[str, set[str]]:
    """Per expression, the names that neither the runtime exports nor our rules record nor the cluster has."""
    known = exported | recorded_names() | external_names()
    out = {}
    for e in exprs:
        missing = metric_names(e.query()) - known
        if missing:
            out[e.where] = missing
    return out
