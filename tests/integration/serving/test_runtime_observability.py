"""A real server with every module on: a clean `promtool check metrics`, the PSI PromQL checked
by `promtool test rules`, bad input answered with JSON 4xx while serving goes on, and a
schema-driven fuzz (schemathesis) of the served OpenAPI document that finds no 5xx."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import serving_bundles as bundles
from helpers import require_tool

from serving.modules.drift import PSI_PROMQL

pytestmark = pytest.mark.integration
CHAIN = ["preprocessing", "outlier", "drift", "model", "postprocessing"]
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def monitored(start_server, tmp_path: Path, iris_model, port: int):
    bundle = bundles.write_bundle(
        tmp_path / "bundle",
        iris_model,
        labels=bundles.IRIS_LABELS,
        modules=CHAIN,
        reference=bundles.iris_reference(),
        max_body_bytes=4096,
    )
    server = start_server(bundle, port)
    server.wait_ready()
    return server


def test_metrics_pass_promtool_after_traffic(monitored) -> None:
    promtool = require_tool("promtool")
    with httpx.Client(base_url=monitored.url, timeout=10) as client:
        assert client.post("/v1/predict", json={"instances": [ROW, [5.1, 3.5, 40.0, 0.2]]}).status_code == 200
        assert client.post("/v1/predict", json={"instances": [[1, 2]]}).status_code == 422
        assert client.get("/v1/drift").status_code == 200
        text = client.get("/metrics").text
    for name in (
        "mlops_http_requests_total",
        "mlops_module_duration_seconds_bucket",
        "mlops_batch_size_rows_bucket",
        "mlops_batch_queue_wait_seconds_bucket",
        "mlops_outliers_total",
        "mlops_drift_observations_total",
        "mlops_drift_reference_share",
        "mlops_predictions_total",
        "mlops_model_info",
    ):
        assert f"\n{name}" in text, name
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (check.returncode, check.stdout + check.stderr) == (0, "")


def test_psi_promql_evaluates_to_the_psi(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    expr = PSI_PROMQL.format(window="5m")
    (tmp_path / "rules.yml").write_text(
        json.dumps({"groups": [{"name": "drift", "rules": [{"record": "feature:mlops_drift_psi:5m", "expr": expr}]}]})
    )
    observed = {"0": 10, "1": 30, "2": 0}  # per minute; reference shares 0.5, 0.3, 0.2
    shares = {"0": 0.5, "1": 0.3, "2": 0.2}
    series = [
        {"series": f'mlops_drift_observations_total{{feature="x",bin="{b}",instance="a"}}', "values": f"0+{n}x20"}
        for b, n in observed.items()
    ]
    series += [
        {"series": f'mlops_drift_reference_share{{feature="x",bin="{b}",instance="{i}"}}', "values": f"{s}x20"}
        for b, s in shares.items()
        for i in ("a", "b")
    ]  # two pods export the same shares
    p = {"0": 0.25, "1": 0.75, "2": 1e-4}
    psi = sum((p[b] - shares[b]) * math.log(p[b] / shares[b]) for b in shares)
    (tmp_path / "test.yml").write_text(
        json.dumps(
            {
                "rule_files": ["rules.yml"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": series,
                        "promql_expr_test": [
                            {
                                "expr": "feature:mlops_drift_psi:5m",
                                "eval_time": "10m",
                                "exp_samples": [{"labels": 'feature:mlops_drift_psi:5m{feature="x"}', "value": psi}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    run = subprocess.run(
        [promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


BAD = [
    (b"not json", 400),
    (b'{"instances": []}', 400),
    (b"[" * 3000, 400),
    (b'{"instances": [[1, 2, 3]]}', 422),
    (b'{"instances": [[1, 2, 3, "x"]]}', 422),
    (b'{"instances": [[1, 2, 3, NaN]]}', 422),
    (b'{"instances": [{"sepal_length_cm": 1}]}', 422),
    (b'{"instances": [{"colour": 1}]}', 422),
    (b'{"instances": [' + b"[1, 2, 3, 4]," * 400 + b"[1, 2, 3, 4]]}", 413),
]


def test_bad_input_is_json_4xx_and_serving_goes_on(monitored) -> None:
    with httpx.Client(base_url=monitored.url, timeout=10) as client:
        for body, status in BAD:
            r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (body[:40], r.text)
            assert set(r.json()["error"]) == {"code", "message"} and "Traceback" not in r.text
            assert client.post("/v1/predict", json={"instances": [ROW]}).status_code == 200
    assert "Traceback" not in monitored.stderr


def test_fuzzing_the_openapi_document_finds_no_server_error(monitored, tmp_path: Path) -> None:
    st = require_tool("schemathesis")
    run = subprocess.run(
        [
            st,
            "run",
            f"{monitored.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "150",
            "--seed",
            "3",
            "--no-color",
            "--generation-database",
            "none",
            "--exclude-path-regex",
            PROTOCOL_PATHS,
            "--report-dir",
            str(tmp_path / "report"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    assert "Traceback" not in monitored.stderr


PROTOCOL_PATHS = "^/v2|^/v1/models"  # the Open Inference Protocol and KServe v1 routes


def test_fuzzing_the_protocol_routes_finds_no_server_error(monitored, tmp_path: Path) -> None:
    """The v2 and KServe v1 routes of the same document, fewer examples each (11 operations)."""
    st = require_tool("schemathesis")
    run = subprocess.run(
        [
            st,
            "run",
            f"{monitored.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "3",
            "--no-color",
            "--generation-database",
            "none",
            "--include-path-regex",
            PROTOCOL_PATHS,
            "--report-dir",
            str(tmp_path / "report"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    # (schemathesis warns that most generated infer bodies are refused: random shapes rarely fit their data)
    assert "11 selected" in run.stdout and "failed" not in run.stdout, run.stdout[-3000:]
    assert re.search(r"\d+ generated, \d+ passed", run.stdout), run.stdout[-2000:]
    assert "Traceback" not in monitored.stderr
