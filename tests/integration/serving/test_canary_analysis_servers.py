"""Canary analysis on real parts: real model servers (python -m serving) — a normal iris model and one
whose model predicts a shifted class distribution (setosa answered as virginica) — measured through
the scrape fallback and through a real Prometheus (Debian's `prometheus`, scraping every second,
static_configs labelling each target's `track`). The shifted canary fails on prediction shift, a
canary sent drifted inputs fails on input drift, each passes against itself; a Prometheus on a dead
port makes the analysis inconclusive."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import serving_bundles as bundles
import yaml
from helpers import free_port, require_tool
from prometheus_proc import query, start_prometheus, stop_prometheus, wait_for

from mlops_cli.canary.analysis import run_analysis
from mlops_cli.config import load_settings
from mlops_cli.metrics_text import parse_metrics
from mlops_cli.targets import Canary, CanaryMember

pytestmark = pytest.mark.integration
CHAIN = ["preprocessing", "outlier", "drift", "model", "postprocessing"]
DRIFTED = [7.9, 4.4, 6.9, 2.5]  # every feature in its top reference bin


def iris_rows() -> list[list[float]]:
    from sklearn.datasets import load_iris

    return load_iris().data.tolist()


def shifted_model():
    """Iris with setosa relabelled virginica (one far-away setosa row keeps the three classes): on iris
    traffic it answers ~0 % setosa and ~67 % virginica where the normal model answers a third each."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    y = np.where(y == 0, 2, y)
    return DecisionTreeClassifier(random_state=0).fit(np.vstack([x, [[0.0, 0.0, 0.0, 0.0]]]), np.append(y, 0))


@pytest.fixture
def servers(start_server, tmp_path: Path, iris_model) -> dict:
    reference = bundles.iris_reference()
    normal = bundles.write_bundle(
        tmp_path / "normal", iris_model, labels=bundles.IRIS_LABELS, modules=CHAIN, reference=reference
    )
    shifted = bundles.write_bundle(
        tmp_path / "shifted",
        shifted_model(),
        labels=bundles.IRIS_LABELS,
        modules=CHAIN,
        reference=reference,
        version="2",
    )
    return {
        "stable": start_ours(start_server, normal, "stable"),
        "shifted": start_ours(start_server, shifted, "shifted"),
        "drifted": start_ours(start_server, normal, "drifted"),
    }


def start_ours(start_server, bundle: Path, name: str):
    """A server that alone answers on its port. The runtime binds with SO_REUSEPORT (for handovers), so a
    server another test run starts on the same free port would share it and mix the figures: each one is
    started on its own (ready before the next port is picked) and asked for its --instance token."""
    for _ in range(3):
        token = f"{name}-{uuid.uuid4().hex[:12]}"
        server = start_server(bundle, free_port(), "--instance", token)
        server.wait_ready()
        answers = {httpx.get(f"{server.url}/health/ready", timeout=10).json().get("instance") for _ in range(5)}
        if answers == {token}:
            return server
        server.stop()
    pytest.fail(f"no port of our own for the {name} server after 3 tries")


def member(track: str, server, selector: str = "") -> CanaryMember:
    return CanaryMember(
        track=track, url=server.url, metrics_url=f"{server.url}/metrics", selector=selector or f'track="{track}"'
    )


def traffic(servers: dict, rounds: int = 2) -> None:
    """The same iris traffic to stable and the shifted canary, drifted rows to the drifted one:
    30 requests of 10 rows each per round and server (the split a load balancer would make)."""
    rows = iris_rows()
    with httpx.Client(timeout=10) as client:
        for _ in range(rounds):
            for i in range(0, len(rows), 5):
                batch = rows[i : i + 5] + rows[i : i + 5][::-1]
                for name in ("stable", "shifted"):
                    assert client.post(f"{servers[name].url}/v1/predict", json={"instances": batch}).status_code == 200
                assert (
                    client.post(f"{servers['drifted'].url}/v1/predict", json={"instances": [DRIFTED] * 10}).status_code
                    == 200
                )


def by_metric(result) -> dict:
    return {m.metric: m for m in result.measurements}


def test_scrape_fallback_fails_a_shifted_or_drifted_canary_and_passes_each_against_itself(servers) -> None:
    settings = load_settings(None, {}, environ={})
    sleeps: list[float] = []

    def window(seconds: float) -> None:  # the window between the two scrapes: the traffic flows
        sleeps.append(seconds)
        traffic(servers)

    stable = member("stable", servers["stable"])
    shifted = run_analysis(
        settings,
        "default",
        Canary("prod", "http://lb", stable, member("canary", servers["shifted"]), 10),
        window_s=3,
        sleep=window,
    )
    assert shifted.verdict == "fail" and sleeps == [3], shifted.to_dict()
    m = by_metric(shifted)
    assert m["prediction-shift"].outcome == "fail" and m["prediction-shift"].canary == pytest.approx(1 / 3, abs=0.05)
    assert "prediction-shift: TVD of predictions 0.3" in shifted.reason
    assert m["input-drift"].outcome == "pass" and m["error-ratio"].outcome == "pass"
    assert m["error-ratio"].canary == 0.0 and m["error-ratio"].stable == 0.0

    drifted = run_analysis(
        settings,
        "default",
        Canary("prod", "http://lb", stable, member("canary", servers["drifted"]), 10),
        window_s=3,
        sleep=window,
    )
    m = by_metric(drifted)
    assert drifted.verdict == "fail" and m["input-drift"].outcome == "fail", drifted.to_dict()
    assert m["input-drift"].canary > 1 and m["input-drift"].stable < 0.1
    assert m["input-drift"].detail.startswith("PSI ")

    for name in ("shifted", "stable"):
        itself = run_analysis(
            settings,
            "default",
            Canary("prod", "http://lb", member("stable", servers[name]), member("canary", servers[name]), 10),
            window_s=3,
            sleep=window,
        )
        assert itself.verdict == "pass", itself.to_dict()
        assert by_metric(itself)["prediction-shift"].canary == 0.0


@pytest.fixture
def prometheus(servers, tmp_path: Path) -> Iterator[str]:
    binary = require_tool("prometheus")

    def target(name: str, track: str) -> dict:
        return {"targets": [f"127.0.0.1:{servers[name].port}"], "labels": {"track": track, "lane": name}}

    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "mlops-canary",
                "static_configs": [
                    target("stable", "stable"),
                    target("shifted", "canary"),
                    target("drifted", "canary"),
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc, log, url = start_prometheus(binary, tmp_path / "prometheus.yml", tmp_path)
    try:
        yield url
    finally:
        stop_prometheus(proc, log)


def test_prometheus_source_judges_by_track_and_a_dead_prometheus_is_inconclusive(servers, prometheus: str) -> None:
    wait_for(lambda: len(query(prometheus, 'up{job="mlops-canary"} == 1')) == 3, 60, "targets not scraped")
    # one request each first, so that the request series exist in Prometheus before the counted traffic
    with httpx.Client(timeout=10) as client:
        for server in servers.values():
            assert client.post(f"{server.url}/v1/predict", json={"instances": [iris_rows()[0]]}).status_code == 200
    seen = 'sum by (lane) (mlops_http_requests_total{job="mlops-canary", route="/v1/predict"})'
    wait_for(lambda: len(query(prometheus, seen)) == 3, 30, "the first requests were not scraped")
    time.sleep(2)
    traffic(servers)
    wait_for(
        lambda: all(float(r["value"][1]) >= 61 for r in query(prometheus, seen)) and len(query(prometheus, seen)) == 3,
        30,
        "the traffic was not scraped",
    )
    time.sleep(1.5)  # one more scrape: the window's last sample holds every count

    settings = load_settings(None, {"monitor": {"prometheus_url": prometheus}}, environ={})
    no_wait = {"window_s": 60, "sleep": lambda s: pytest.fail("nothing to wait for with a Prometheus")}
    stable = member("stable", servers["stable"], 'job="mlops-canary",track="stable"')
    shifted = member("canary", servers["shifted"], 'job="mlops-canary",track="canary",lane="shifted"')
    drifted = member("canary", servers["drifted"], 'job="mlops-canary",track="canary",lane="drifted"')

    result = run_analysis(settings, "default", Canary("prod", "http://lb", stable, shifted, 10), **no_wait)
    m = by_metric(result)
    assert result.verdict == "fail" and m["prediction-shift"].outcome == "fail", result.to_dict()
    # on failure, say what Prometheus counted and what each server counted itself (a port shared by another
    # SO_REUSEPORT server started by a concurrent test run would show here)
    seen_by_prometheus = {
        lane: query(prometheus, f'sum by (label) (increase(mlops_predictions_total{{lane="{lane}"}}[60s]))')
        for lane in ("stable", "shifted")
    }
    own = {
        name: parse_metrics(httpx.get(f"{s.url}/metrics", timeout=10).text)["predictions"]
        for name, s in servers.items()
    }
    assert m["prediction-shift"].canary == pytest.approx(1 / 3, abs=0.05), (seen_by_prometheus, own, result.to_dict())
    assert m["error-ratio"].canary == 0.0 and m["latency-p99"].canary > 0 and m["input-drift"].outcome == "pass"

    result = run_analysis(settings, "default", Canary("prod", "http://lb", stable, drifted, 10), **no_wait)
    m = by_metric(result)
    assert result.verdict == "fail" and m["input-drift"].outcome == "fail", result.to_dict()
    assert m["input-drift"].canary > 1 and m["input-drift"].stable < 0.1

    for one in (stable, shifted):
        result = run_analysis(settings, "default", Canary("prod", "http://lb", one, one, 10), **no_wait)
        assert result.verdict == "pass", result.to_dict()

    # a user-defined query with {selector} and {window}
    custom = {
        "metrics": [
            {
                "name": "rows",
                "kind": "query",
                "success_condition": "result == stable",
                "query": "sum(increase(mlops_batch_size_rows_sum{{selector}}[{window}])) > bool 0",
            }
        ]
    }
    mine = load_settings(
        None,
        {"monitor": {"prometheus_url": prometheus}, "canary_analysis": {"templates": {"mine": custom}}},
        environ={},
    )
    result = run_analysis(mine, "mine", Canary("prod", "http://lb", stable, shifted, 10), **no_wait)
    assert result.verdict == "pass" and result.measurements[0].canary == 1.0, result.to_dict()

    # no traffic in a 1 s window long after it: no data, inconclusive with the reason
    result = run_analysis(
        settings, "default", Canary("prod", "http://lb", stable, shifted, 10), window_s=1, sleep=no_wait["sleep"]
    )
    assert result.verdict == "inconclusive" and "predict requests in the window" in result.reason, result.to_dict()

    dead = load_settings(None, {"monitor": {"prometheus_url": f"http://127.0.0.1:{free_port()}"}}, environ={})
    result = run_analysis(dead, "default", Canary("prod", "http://lb", stable, shifted, 10), **no_wait)
    assert result.verdict == "inconclusive" and "unreachable" in result.reason
    assert [m.outcome for m in result.measurements] == ["inconclusive"] * 5  # one round: every metric, none measured
