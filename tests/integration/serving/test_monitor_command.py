"""`mlops monitor` against a real server: PSI per feature as /v1/drift reports it, outliers, and
the alerts computed from the server's figures; bad input is one line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import serving_bundles as bundles
from helpers import run_cli

pytestmark = pytest.mark.integration
CHAIN = ["preprocessing", "outlier", "drift", "model", "postprocessing"]


@pytest.fixture
def served(start_server, tmp_path: Path, iris_model, port: int):
    bundle = bundles.write_bundle(
        tmp_path / "bundle", iris_model, labels=bundles.IRIS_LABELS, modules=CHAIN, reference=bundles.iris_reference()
    )
    server = start_server(bundle, port)
    server.wait_ready()
    return server


def test_monitor_prints_live_psi_per_feature_and_the_alerts(served, tmp_path: Path) -> None:
    from mlops_cli.config import load_settings
    from mlops_cli.monitor import snapshot

    settings = load_settings(None, {"monitor": {"url": served.url, "window_s": 7}}, environ={})
    with httpx.Client(base_url=served.url, timeout=10) as client:
        run = run_cli("monitor", "--url", served.url, "--window", "0.2", "--json", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        quiet = json.loads(run.stdout)
        assert {f["level"] for f in quiet["features"]} == {"no data"} and quiet["alerts"] == []
        assert quiet["window"] == "last 0.2s"

        def drifted(n: int) -> None:  # every feature in its top reference bin, one value far out
            for _ in range(n):
                assert (
                    client.post(
                        "/v1/predict", json={"instances": [[7.9, 4.4, 6.9, 2.5]] * 9 + [[5.1, 3.5, 40.0, 0.2]]}
                    ).status_code
                    == 200
                )

        drifted(5)  # before the window: not counted
        waits: list[float] = []
        result = snapshot(settings, sleep=lambda s: (waits.append(s), drifted(15))).model_dump()
        drift = client.get("/v1/drift").json()["features"]  # since the start: 200 values, not the window's 150
    assert waits == [7] and result["window"] == "last 7s"
    assert result["model"] == "iris@1" and result["predict_requests"] == 15 and result["drift_module"]
    assert all(f["level"] == "critical" and f["observations"] == 150 for f in result["features"])
    assert all(f["observations"] == 200 for f in drift.values())
    psi = {f["feature"]: f["psi"] for f in result["features"]}
    assert psi == {name: f["psi"] for name, f in drift.items()}  # the same shares: 15 of 20 rows alike
    assert {f["feature"]: f["outliers"] for f in result["features"]}["petal_length_cm"] == 15
    names = [(a["name"], a["severity"]) for a in result["alerts"]]
    assert names[:4] == [("MlopsFeatureDrift", "critical")] * 4 and ("MlopsHighOutlierRate", "warning") in names
    assert len(names) == 5  # the default --top
    human = run_cli("monitor", "--url", served.url, "--top", "2", "--window", "0.2", cwd=tmp_path)
    assert human.returncode == 0
    assert "petal_length_cm" in human.stdout and "(last 0.2s)" in human.stdout and "alerts     top" not in human.stdout


def test_monitor_bad_input(served, tmp_path: Path) -> None:
    cases = [
        (("monitor",), 2, "no server to look at"),
        (("monitor", "--url", "ftp://x"), 2, "must be an http(s) URL"),
        (("monitor", "--url", "http://127.0.0.1:9"), 75, "cannot reach the model server"),
        (("monitor", "--url", served.url, "--prometheus", "http://127.0.0.1:9"), 75, "cannot reach Prometheus"),
        (("monitor", "--url", served.url, "--top", "0"), 2, "--top"),
        (("monitor", "--url", "http://127.0.0.1:abc"), 2, "not a valid URL for the model server"),
        (("monitor", "--url", served.url, "--prometheus", "http://127.0.0.1:abc"), 2, "not a valid URL for Prometheus"),
        (("monitor", "--url", served.url, "--prometheus", "prom:9090"), 2, "must be an http(s) URL, got 'prom:9090'"),
        (("monitor", "--url", served.url, "--window", "0"), 2, "--window"),
        (("monitor", "--url", served.url, "--window", "x"), 2, "--window"),
    ]
    for args, code, message in cases:
        run = run_cli(*args, cwd=tmp_path)
        assert run.returncode == code and message in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr
        if not message.startswith("--"):  # ours, not click's usage message: one line
            assert len(run.stderr.strip().splitlines()) == 1, run.stderr
