"""The monitoring files without running anything: dashboards are generate.py's output and
provisioning-ready, the PrometheusRule holds the plain rules, every alert has a severity, a runbook
section and promtool cases that fire it and that do not, and the PSI in those cases is the one
serving.modules.drift.psi computes. (Real parts: tests/integration/serving/test_monitoring_prometheus.py.)"""

from __future__ import annotations

import importlib.util
import json
import re
from urllib.parse import urlsplit

import pytest
import yaml
from helpers import REPO
from promql_tools import RULES, Expr, dashboard_exprs, metric_names, rule_exprs, rule_groups, unknown_metrics

from serving.modules.drift import psi

MONITORING = REPO / "deploy" / "monitoring"
UNIT_TESTS = MONITORING / "tests" / "mlops-rules-test.yml"


def load_generator():
    spec = importlib.util.spec_from_file_location("grafana_generate", REPO / "grafana" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboards_are_the_generators_output() -> None:
    rendered = load_generator().render()
    files = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    assert files == rendered, "run `python grafana/generate.py`"


def test_dashboards_are_provisioning_ready() -> None:
    uids = set()
    for path in (REPO / "grafana" / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert "__inputs" not in board and "${DS_" not in path.read_text()
        assert board["uid"] not in uids and len(board["uid"]) <= 40
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                used = set(re.findall(r"\$(\w+)", target["expr"]))
                assert used <= set(variables) | {"__rate_interval", "__range", "__interval"}, (panel["title"], used)
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
    assert uids == {"mlops-service", "mlops-drift", "mlops-resources"}


def test_the_issue_s_panels_are_there() -> None:
    exprs = " ".join(e.expr for e in dashboard_exprs())
    for name in (
        "mlops_http_requests_total",
        "mlops_http_request_duration_seconds_bucket",
        "mlops_http_requests_in_flight",
        "mlops_module_duration_seconds_bucket",
        "mlops_batch_size_rows_bucket",
        "mlops_predictions_total",
        "mlops_prediction_value_bucket",
        "mlops_drift_observations_total",
        "mlops_drift_reference_share",
        "mlops_outliers_total",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_status_restarts_total",
    ):
        assert name in exprs, name


def test_dashboards_keep_services_apart_and_pods_that_stopped_answering() -> None:
    boards = {p.name: json.loads(p.read_text()) for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    for board in boards.values():
        job = next(v for v in board["templating"]["list"] if v["name"] == "job")
        assert job["query"]["query"] == 'label_values(mlops_model_info{namespace=~"$namespace"}, job)'
    panels = {p["title"]: p["targets"][0]["expr"] for p in boards["mlops-drift.json"]["panels"] if p.get("targets")}
    assert panels["Observed share per bin"].startswith("sum by (namespace, job, feature, bin, upper)")
    assert "group_left sum by (namespace, job, feature)" in panels["Observed share per bin"]
    assert "/ on (namespace, job) group_left sum by (namespace, job)" in panels["Outlier instances per row scored"]
    for panel in boards["mlops-resources.json"]["panels"]:
        for target in panel.get("targets", []):
            # the pods are found by `up` (written on every scrape), never by a series the server must answer with
            assert "mlops_model_info" not in target["expr"] and "* on (namespace, pod)" not in target["expr"]
            assert target["expr"].endswith(
                'and on (namespace, pod) up{mlops_role="serving", namespace=~"$namespace", job=~"$job"}'
            )


def test_every_expression_parses() -> None:
    exprs = dashboard_exprs() + rule_exprs()
    assert len(exprs) > 40
    for e in exprs:
        assert metric_names(e.query()), e.where  # parses, and selects something


def test_a_panel_on_a_name_nobody_exports_is_reported() -> None:
    exported = {"mlops_http_requests_total"}
    board = {
        "panels": [
            {"title": "ok", "targets": [{"refId": "A", "expr": "sum(rate(mlops_http_requests_total[1m]))"}]},
            {
                "title": "typo",
                "targets": [
                    {"refId": "A", "expr": 'rate(mlops_http_request_total{job=~"$job"}[5m])'},
                    {"refId": "B", "expr": '{__name__="mlops_nope"}'},
                ],
            },
        ],
        "templating": {"list": []},
    }
    assert unknown_metrics(dashboard_exprs(dashboards={"b.json": board}), exported) == {
        "b.json: typo [A]": {"mlops_http_request_total"},
        "b.json: typo [B]": {"mlops_nope"},
    }


def test_alert_queries_turn_thresholds_into_bool_comparisons() -> None:
    e = Expr("x", "alert", 'a{b!="1", c=~"5.."} > 0.05 and on (j) c >= 100 or d == 0 unless e < -1')
    assert e.query() == 'a{b!="1", c=~"5.."} > bool 0.05 and on (j) c >= bool 100 or d == bool 0 unless e < bool -1'
    assert Expr("x", "panel", "a > 0.05").query() == "a > 0.05"


def test_prometheusrule_object_holds_the_plain_rules() -> None:
    obj = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["kind"] == "PrometheusRule"
    assert obj["spec"]["groups"] == rule_groups(RULES)
    spec = importlib.util.spec_from_file_location("gen_rule", MONITORING / "generate_prometheusrule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (MONITORING / "prometheusrule.yaml").read_text() == module.render(), "run generate_prometheusrule.py"


def test_the_file_comments_name_the_test_file_that_exists() -> None:
    for path in (MONITORING / "prometheusrule.yaml", UNIT_TESTS):
        for name in re.findall(r"tests/unit/\w+\.py", path.read_text()):
            assert (REPO / name).is_file(), (path.name, name)


def test_model_not_ready_finds_serving_targets_by_up_not_by_a_series_that_vanishes() -> None:
    rule = next(a for a in alerts() if a["alert"] == "MlopsModelNotReady")
    names = metric_names(rule["expr"])
    assert "mlops_model_info" not in names and "up" in names and 'mlops_role="serving"' in rule["expr"]
    assert "min by (namespace, pod) (kube_pod_container_status_ready)" in rule["expr"]
    assert "{{ $labels.job }}{{ $labels.pod }}" not in rule["annotations"]["summary"]


def test_alertmanager_relay_example_fits_max_alerts_into_the_relay_s_body_limit() -> None:
    """Alertmanager does not retry a 413: a group it sends must fit relay.max_body_bytes."""
    from mlops_cli.settings import RelaySettings

    config = yaml.safe_load((MONITORING / "alertmanager-relay.yml").read_text())
    limit = RelaySettings().max_body_bytes
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            # a generous 4 KiB per alert (labels, annotations, URLs) plus the group's own fields
            assert hook["max_alerts"] > 0 and hook["max_alerts"] * 4096 + 16384 <= limit, hook


def test_alertmanager_sends_the_relay_token_only_over_verified_tls() -> None:
    config = yaml.safe_load((MONITORING / "alertmanager-relay.yml").read_text())
    hooks = [hook for receiver in config["receivers"] for hook in receiver.get("webhook_configs", [])]
    assert hooks
    for hook in hooks:
        http = hook["http_config"]
        assert http["authorization"]["credentials_file"] and "credentials" not in http["authorization"]
        assert hook["url"].startswith("https://"), hook["url"]
        assert http["tls_config"]["ca_file"] and not http["tls_config"].get("insecure_skip_verify", False)
        # OpenShift's service serving certificate names <service>.<namespace>.svc[.cluster.local], not the bare
        # service name: the name checked (server_name, else the URL's host) must be one of those
        host = http["tls_config"].get("server_name") or urlsplit(hook["url"]).hostname
        assert re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+\.svc(\.cluster\.local)?", host), host


def alerts() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def test_every_alert_has_a_severity_annotations_and_a_runbook_section() -> None:
    runbooks = (MONITORING / "runbooks.md").read_text()
    anchors = {"#" + h.lower().replace(" ", "-") for h in re.findall(r"^## (.+)$", runbooks, re.M)}
    names = {a["alert"] for a in alerts()}
    assert names == {
        "MlopsHighErrorRatio",
        "MlopsLatencySLOBreached",
        "MlopsFeatureDrift",
        "MlopsHighOutlierRate",
        "MlopsNoTraffic",
        "MlopsPodRestarts",
        "MlopsModelNotReady",
        "MlopsRelaySinkDown",
        "MlopsRelayDeadLetters",
        "MlopsRelayQueueFilling",
    }
    for rule in alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"deploy/monitoring/runbooks.md#{rule['alert'].lower()}" and url[url.index("#") :] in anchors
    drift = [a["labels"]["severity"] for a in alerts() if a["alert"] == "MlopsFeatureDrift"]
    assert drift == ["warning", "critical"]


def test_every_alert_has_promtool_cases_that_fire_it_and_that_do_not() -> None:
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    for name in {a["alert"] for a in alerts()}:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case fires it"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it must not fire"
    severities = {
        a["exp_labels"]["severity"] for c in cases if c["alertname"] == "MlopsFeatureDrift" for a in c["exp_alerts"]
    }
    assert severities == {"warning", "critical"}


def _per_minute(values: str) -> float:
    m = re.fullmatch(r"0\+(\d+)x\d+", values) or re.fullmatch(r"(0)x\d+", values)
    assert m, values
    return float(m.group(1))


def test_the_psi_the_rule_must_record_is_the_one_python_computes() -> None:
    test = next(
        t
        for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        if any("namespace_job_feature:mlops_drift_psi" in c["expr"] for c in t.get("promql_expr_test", []))
    )
    observed: dict[tuple[str, str], dict[int, float]] = {}
    shares: dict[tuple[str, str], dict[int, float]] = {}
    for s in test["input_series"]:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', s["series"]))
        key, b = (labels["job"], labels["feature"]), int(labels["bin"])
        if s["series"].startswith("mlops_drift_observations_total"):
            observed.setdefault(key, {})[b] = _per_minute(s["values"])
        else:
            shares.setdefault(key, {})[b] = float(s["values"].split("x")[0])
    expected = {}
    for sample in test["promql_expr_test"][0]["exp_samples"]:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', sample["labels"]))
        expected[(labels["job"], labels["feature"])] = sample["value"]
    assert set(expected) == set(observed) == set(shares)
    for key, value in expected.items():
        counts = [observed[key][b] for b in sorted(observed[key])]
        python = psi([int(c) for c in counts], [shares[key][b] for b in sorted(shares[key])])
        assert value == pytest.approx(python, rel=1e-10, abs=1e-12), key  # the case rounds to 1e-12
    assert expected[("iris", "drifted")] > 0.25 > expected[("iris", "shifted")] > 0.1 > expected[("iris", "calm")]


def test_the_rules_psi_is_the_runtime_s_expression_per_service() -> None:
    """serving.modules.drift.PSI_PROMQL aggregates by feature; the rule by namespace, job and feature."""
    from serving.modules.drift import PSI_PROMQL

    rule = next(
        r["expr"]
        for g in rule_groups()
        for r in g["rules"]
        if r.get("record") == "namespace_job_feature:mlops_drift_psi:1h"
    )
    flat = " ".join(rule.split()).replace("( ", "(").replace(" )", ")")
    runtime = PSI_PROMQL.format(window="1h")
    for old, new in (("(feature, bin)", "(namespace, job, feature, bin)"), ("(feature)", "(namespace, job, feature)")):
        runtime = runtime.replace(old, new)
    assert flat == runtime
