"""End to end (issue 15): `mlops rolling-update` with rollout.strategy canary on the local target, a real
HAProxy in front of real model servers, a real Prometheus scraping them through the target's file_sd
file, and the real analysis (mlops_cli.canary.analysis). A canary whose model predicts a shifted class
distribution is aborted at its first analysis, at 10 % of traffic, with stable serving every request;
a Prometheus stopped mid-run makes the analysis inconclusive, handled as configured.

The template leaves out the p99 latency check: on a 2-core machine shared with other test runs, a
few slow answers among the canary's first requests would decide the test instead of the model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from canary_helpers import prepare_two, prod_serving_v1
from helpers import FEATURES, read_state
from prometheus_proc import query, wait_for
from test_canary_local import _haproxy, only_one_server  # noqa: F401 (fixture)
from test_canary_prometheus import prometheus_for  # noqa: F401 (fixture)

from mlops_cli.canary import engine
from mlops_cli.canary.analysis import run_analysis
from mlops_cli.errors import StageFailed
from mlops_cli.register import reference_stats
from mlops_cli.state import State
from mlops_cli.targets.local import LocalTarget

pytestmark = pytest.mark.integration

TEMPLATE = {
    "metrics": [
        {"name": "error-ratio", "kind": "error_ratio", "success_condition": "result <= max(stable * 2, 0.01)"},
        {"name": "input-drift", "kind": "input_drift", "success_condition": "result <= 0.25"},
        {"name": "prediction-shift", "kind": "prediction_shift", "success_condition": "result <= 0.2"},
    ]
}


def iris():
    from sklearn.datasets import load_iris

    return load_iris()


def shifted_model(path: Path) -> Path:
    """Iris with setosa answered as virginica: ~0 % setosa, ~67 % virginica where stable answers a third each."""
    import joblib
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    data = iris()
    y = np.where(data.target == 0, 2, data.target)
    model = DecisionTreeClassifier(random_state=0).fit(np.vstack([data.data, [[0.0] * 4]]), np.append(y, 0))
    joblib.dump(model, path)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, iris_artifact):
    root = tmp_path_factory.mktemp("canary-e2e")
    data = iris()
    reference = reference_stats({f: data.data[:, i].tolist() for i, f in enumerate(FEATURES)})
    return prepare_two(root, iris_artifact, shifted_model(root / "shifted.joblib"), reference=reference)


class IrisTraffic:
    """Bounded clients sending iris rows (5 per request) to a URL; counts answers and failures."""

    def __init__(self, url: str, clients: int = 3):
        rows = iris().data.tolist()
        self.batches = [rows[i : i + 5] for i in range(0, len(rows), 5)]
        self.url, self.stop, self.ok, self.failed, self.failures = url, threading.Event(), 0, 0, []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def _run(self, offset: int) -> None:
        deadline = time.monotonic() + 150
        with httpx.Client(base_url=self.url, timeout=10) as http:
            i = offset * 7
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    answer = http.post("/v1/predict", json={"instances": self.batches[i % len(self.batches)]})
                    ok, detail = answer.status_code == 200, f"status {answer.status_code}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                with self.lock:
                    self.ok += ok
                    self.failed += not ok
                    if not ok:
                        self.failures.append(detail)
                i += 1
                time.sleep(0.01)

    def __enter__(self) -> IrisTraffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture
def release(make_settings, prepared, tmp_path, prometheus_for):
    """settings (prod serving version 1, version 2 ready) and a real Prometheus on the target's file_sd file."""

    def make(**analysis):
        workdir = tmp_path / "work"
        prom = prometheus_for(workdir / "prometheus" / "targets-prod.json")
        s = make_settings(
            workdir=workdir,
            model=prepared.state["model"]["ref"],
            store={"path": str(prepared.root / "work" / "store")},
            monitor={"prometheus_url": prom},
            rollout={
                "strategy": "canary",
                "analysis_retry_s": 0.5,
                "steps": [
                    {"set_weight": 10},
                    {"pause": 12},
                    {"analysis": "shift"},
                    {"set_weight": 50},
                    {"pause": 5},
                    {"analysis": "shift"},
                ],
            },
            canary_analysis={"min_requests": 10, "templates": {"shift": TEMPLATE}, **analysis},
        )
        prod_serving_v1(prepared, s)
        return s, prom

    return make


def test_a_canary_predicting_shifted_classes_is_aborted_at_10_percent(release):
    s, prom = release()
    state = State.load(s.workdir)
    with IrisTraffic(state.deployments["prod"].url) as traffic:
        with pytest.raises(StageFailed) as failed:
            engine.run(s, state, "prod", LocalTarget(s))
        time.sleep(0.5)
    print(f"{traffic.ok} answered, {traffic.failed} failed; {failed.value}")
    assert traffic.failed == 0, traffic.failures[:5]
    assert traffic.ok > 100
    message = str(failed.value)
    assert message.startswith("canary aborted, revision 1 still serves: analysis 'shift' failed at 10 %: ")
    assert "prediction-shift" in message and "\n" not in message
    saved = read_state(s.workdir)
    canary = saved["canaries"]["prod"]
    assert canary["status"] == "aborted"
    assert [st["outcome"] for st in canary["steps"]] == ["done", "done", "fail", "pending", "pending", "pending"]
    measured = {m["metric"]: m for m in canary["steps"][2]["analysis"]["measurements"]}
    assert measured["error-ratio"]["outcome"] == "pass" and measured["input-drift"]["outcome"] == "pass"
    assert measured["prediction-shift"]["outcome"] == "fail" and measured["prediction-shift"]["canary"] > 0.2
    assert saved["deployments"]["prod"]["model_version"] == "1"
    only_one_server(s, saved["deployments"]["prod"])
    # Prometheus saw both tracks, labelled by the file the target wrote (their series ended with the canary)
    seen = query(prom, 'group by (track) (last_over_time(mlops_predictions_total{env="prod"}[5m]))')
    assert {r["metric"]["track"] for r in seen} == {"stable", "canary"}


@pytest.mark.parametrize("mode, expect", [("abort", "aborted"), ("proceed", "promoted")])
def test_prometheus_stopped_mid_run_is_inconclusive_and_handled_as_configured(release, prometheus_for, mode, expect):
    s, prom = release(on_inconclusive=mode)
    state = State.load(s.workdir)
    s = s.model_copy(
        update={
            "rollout": s.rollout.model_copy(update={"steps": [{"set_weight": 10}, {"pause": 3}, {"analysis": "shift"}]})
        }
    )

    def prometheus_dies_then_analyse(settings, template, canary, *, window_s, sleep):
        wait_for(lambda: query(prom, 'up{track="canary"} == 1'), 30, "Prometheus scrapes the canary")
        for proc, _ in prometheus_for.procs:  # the running Prometheus of this test
            proc.kill()
            proc.wait(timeout=10)
        return run_analysis(settings, template, canary, window_s=window_s, sleep=sleep)

    with IrisTraffic(state.deployments["prod"].url) as traffic:
        if expect == "aborted":
            with pytest.raises(StageFailed, match="inconclusive at 10 %"):
                engine.run(s, state, "prod", LocalTarget(s), analyse=prometheus_dies_then_analyse)
        else:
            engine.run(s, state, "prod", LocalTarget(s), analyse=prometheus_dies_then_analyse)
    assert traffic.failed == 0, traffic.failures[:5]
    saved = read_state(s.workdir)
    step = saved["canaries"]["prod"]["steps"][2]
    assert step["analysis"]["verdict"] == "inconclusive" and saved["canaries"]["prod"]["status"] == expect
    assert saved["deployments"]["prod"]["model_version"] == ("1" if expect == "aborted" else "2")
    only_one_server(s, saved["deployments"]["prod"])
