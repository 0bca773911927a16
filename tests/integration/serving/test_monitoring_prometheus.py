"""Monitoring on real parts: promtool on the rule files, metric names scraped from real servers, and
a real Prometheus (Debian's `prometheus`, on 127.0.0.1, scrape and evaluation every second) scraping
two real servers (iris with outlier and drift modules, a regression model) and a static exporter double
for the kube-state-metrics/cAdvisor series that need a cluster. Every expression of the dashboards
and rules must return data, and the drift alert must fire.

The rules Prometheus loads are a test-only copy of deploy/monitoring/mlops-rules.yml whose `for:`
durations are 1s (the real ones wait 5-30 minutes); alert expressions are queried with their
threshold comparisons as `bool` comparisons (Expr.query), so a healthy service still returns the
compared series.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import serving_bundles as bundles
import yaml
from helpers import free_port, require_tool
from prometheus_proc import query, start_prometheus, stop_prometheus, wait_for
from promql_tools import (
    DASHBOARDS,
    KUBE_DOUBLE,
    RULES,
    Expr,
    dashboard_exprs,
    exported_names,
    rule_exprs,
    unknown_metrics,
)

pytestmark = pytest.mark.integration
CHAIN = ["preprocessing", "outlier", "drift", "model", "postprocessing"]
MONITORING = RULES.parent


def test_rule_files_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 26 rules found" in check.stdout, check.stdout + check.stderr
    # the PrometheusRule object's groups, as a plain rule file
    obj = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    plain = tmp_path / "prometheusrule-groups.yml"
    plain.write_text(yaml.safe_dump({"groups": obj["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(plain)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", "mlops-rules-test.yml"],
        cwd=MONITORING / "tests",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_promtool_test_fails_when_an_alert_does_not_fire(tmp_path: Path) -> None:
    """The unit tests can fail: raise the error-ratio threshold and the firing case must break."""
    promtool = require_tool("promtool")
    rules = RULES.read_text().replace(
        "namespace_job:mlops_http_errors:ratio_rate5m > 0.05", "namespace_job:mlops_http_errors:ratio_rate5m > 0.5"
    )
    assert rules != RULES.read_text()
    (tmp_path / "rules").mkdir()
    (tmp_path / "mlops-rules.yml").write_text(rules)
    (tmp_path / "rules" / "t.yml").write_text((MONITORING / "tests" / "mlops-rules-test.yml").read_text())
    run = subprocess.run(
        [promtool, "test", "rules", "t.yml"], cwd=tmp_path / "rules", capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0 and "MlopsHighErrorRatio" in run.stdout + run.stderr


def test_alertmanager_examples_pass_amtool() -> None:
    amtool = require_tool("amtool")
    for name in ("alertmanager.yml", "alertmanager-relay.yml"):
        run = subprocess.run(
            [amtool, "check-config", str(MONITORING / name)], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


# --- real servers, a static exporter double, a real Prometheus --------------------------------------


def iris_rows() -> list[list[float]]:
    from sklearn.datasets import load_iris

    return load_iris().data[::5].tolist()  # 30 rows, 10 of each class


NORMAL = iris_rows()
DRIFTED = [7.9, 4.4, 6.9, 2.5]  # every feature in its top reference bin
OUTLYING = [5.1, 3.5, 40.0, 0.2]  # petal length far outside mean ± 4 std


@pytest.fixture
def servers(start_server, tmp_path: Path, iris_model) -> dict[str, object]:
    iris = bundles.write_bundle(
        tmp_path / "iris", iris_model, labels=bundles.IRIS_LABELS, modules=CHAIN, reference=bundles.iris_reference()
    )
    model, names = bundles.train_diabetes()
    diabetes = bundles.write_bundle(
        tmp_path / "diabetes", model, name="diabetes", task="regression", inputs_=bundles.inputs(names)
    )
    started = {"iris": start_server(iris, free_port()), "diabetes": start_server(diabetes, free_port())}
    for server in started.values():
        server.wait_ready()
    started["diabetes_features"] = len(names)
    return started


def scrape(url: str) -> str:
    r = httpx.get(f"{url}/metrics", timeout=10)
    r.raise_for_status()
    return r.text


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[str]:
    """A real `mlops alert-relay` (its sink never called: no alert is sent to it), for its /metrics:
    the relay's alerts (group mlops.relay) are on its own series."""
    import os
    import sys

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            "MLOPS_RELAY__TOKEN": "t",
            "MLOPS_RELAY__PORT": str(port),
            "MLOPS_RELAY__SINKS": '["slack"]',
            "MLOPS_RELAY__INSECURE": "true",  # plain http on 127.0.0.1 for the local Prometheus
            "MLOPS_RELAY__QUEUE_DIR": str(tmp_path / "relay-queue"),
            "MLOPS_NOTIFY__SLACK__WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/services/T/B/x",
        }
    )
    log = open(tmp_path / "relay.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "alert-relay"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "relay.log").read_text()
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "relay.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def test_every_metric_name_is_exported_by_the_runtime(servers, relay: str) -> None:
    send_traffic(servers)  # labelled series appear with their first observation
    texts = [scrape(servers["iris"].url), scrape(servers["diabetes"].url), scrape(relay)]
    exported = exported_names(texts[0]) | exported_names(texts[1]) | exported_names(texts[2])
    promtool = require_tool("promtool")
    for text in texts:  # classification with outlier and drift, regression with the prediction histogram
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert (check.returncode, check.stdout + check.stderr) == (0, "")
    exprs = dashboard_exprs() + rule_exprs()
    assert unknown_metrics(exprs, exported) == {}
    # a panel on a metric the runtime does not export fails
    board = json.loads((DASHBOARDS / "mlops-service.json").read_text())
    board["panels"].append(
        {
            "title": "typo",
            "targets": [{"refId": "A", "expr": 'sum(rate(mlops_http_request_total{job=~"$job"}[$__rate_interval]))'}],
        }
    )
    assert unknown_metrics(dashboard_exprs(dashboards={"bad.json": board}), exported) == {
        "bad.json: typo [A]": {"mlops_http_request_total"}
    }


@pytest.fixture
def kube_double() -> Iterator[str]:
    """A static exporter double: kube-state-metrics/cAdvisor series (tests/fixtures/monitoring)."""
    body = KUBE_DOUBLE.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def prometheus(servers, kube_double: str, relay: str, tmp_path: Path) -> Iterator[str]:
    binary = require_tool("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "1s"  # test-only copy: the real rules wait minutes
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))

    def target(name: str) -> dict:
        # iris is scraped twice, as the stable and the canary track of a canary release (the canary rules
        # and the dashboards' canary row need both tracks; the same server: no shift, no extra drift)
        tracks = ("stable", "canary") if name == "iris" else (None,)
        return {
            "job_name": name,
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{servers[name].port}"],
                    "labels": {
                        "namespace": "mlops-test",
                        "pod": f"{name}-0",
                        "mlops_role": "serving",
                        **({"track": track} if track else {}),
                    },
                }
                for track in tracks
            ],
        }

    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [
            target("iris"),
            target("diabetes"),
            {"job_name": "kube-state-metrics", "honor_labels": True, "static_configs": [{"targets": [kube_double]}]},
            {"job_name": "mlops-alert-relay", "static_configs": [{"targets": [relay.split("//")[1]]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run(
        [require_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    proc, log, url = start_prometheus(binary, tmp_path / "prometheus.yml", tmp_path)
    try:
        yield url
    finally:
        stop_prometheus(proc, log)


def send_traffic(servers) -> None:
    with httpx.Client(base_url=servers["iris"].url, timeout=10) as iris:
        for i in range(30):
            assert iris.post("/v1/predict", json={"instances": NORMAL[i % 3 * 10 : i % 3 * 10 + 10]}).status_code == 200
        for _ in range(20):
            assert iris.post("/v1/predict", json={"instances": [DRIFTED] * 10}).status_code == 200
        for _ in range(3):
            assert iris.post("/v1/predict", json={"instances": [OUTLYING] * 5 + NORMAL[:5]}).status_code == 200
            assert iris.post("/v1/predict", json={"instances": [[1.0, 2.0]]}).status_code == 422
    with httpx.Client(base_url=servers["diabetes"].url, timeout=10) as diabetes:
        row = [0.01] * servers["diabetes_features"]
        for i in range(20):
            assert diabetes.post("/v1/predict", json={"instances": [row] * (i % 4 + 1)}).status_code == 200


def test_every_expression_returns_data_and_the_drift_alert_fires(servers, prometheus: str) -> None:
    # traffic only once Prometheus has a sample of every target, so increases see all of it
    wait_for(lambda: len(query(prometheus, "up == 1")) == 5, 60, "targets not scraped")
    send_traffic(servers)
    exprs: list[Expr] = dashboard_exprs() + rule_exprs()
    assert len(exprs) > 40

    def empty() -> list[str]:
        return [f"{e.where}: {e.query()}" for e in exprs if not query(prometheus, e.query())]

    deadline = time.monotonic() + 90
    missing = empty()
    while missing and time.monotonic() < deadline:
        time.sleep(1)
        missing = empty()
    assert missing == [], "\n".join(missing)

    psi = {
        r["metric"]["feature"]: float(r["value"][1])
        for r in query(prometheus, 'namespace_job_feature:mlops_drift_psi:1h{job="iris"}')
    }
    assert set(psi) == set(bundles.IRIS_FEATURES) and min(psi.values()) > 0.25, psi

    def firing() -> list[dict]:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "MlopsFeatureDrift"
            and a["state"] == "firing"
            and a["labels"]["severity"] == "critical"
        ]

    alerts = wait_for(firing, 60, "the drift alert never fired")
    assert {a["labels"]["feature"] for a in alerts} == set(bundles.IRIS_FEATURES)
    assert all(
        a["labels"]["job"] == "iris" and a["annotations"]["runbook_url"].endswith("#mlopsfeaturedrift") for a in alerts
    )

    # `mlops monitor` reads the same alerts from this Prometheus, critical and firing first
    from mlops_cli.config import load_settings
    from mlops_cli.monitor import snapshot

    # and the last hour's PSI from the recording rule, the job found by the server's model (no --job)
    settings = load_settings(None, {"monitor": {"url": servers["iris"].url, "prometheus_url": prometheus}}, environ={})
    seen = snapshot(settings, top=3, sleep=lambda s: pytest.fail("no waiting with a Prometheus"))
    assert [(a.name, a.severity, a.state) for a in seen.alerts] == [("MlopsFeatureDrift", "critical", "firing")] * 3
    assert seen.alerts_source == f"Prometheus {prometheus}" and seen.window == "last 1h, Prometheus job iris"
    recorded = {
        r["metric"]["feature"]: float(r["value"][1])
        for r in query(prometheus, 'namespace_job_feature:mlops_drift_psi:1h{job="iris"}')
    }
    assert {f.feature: f.psi for f in seen.features} == pytest.approx(recorded, rel=0.2)
    assert all(f.level == "critical" and f.observations > 0 for f in seen.features) and len(seen.features) == 4
