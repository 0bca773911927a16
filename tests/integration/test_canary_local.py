"""Canary releases on the local target (issue 15): a real HAProxy in front of two real model servers.

Real servers on free ports, the real HAProxy (Debian `haproxy`) on the env's port, real clients
under bounded load, the real CLI killed with a real signal. The analysis is injected into the
engine (`analyse=`) where a test is about the engine's decisions rather than the measurements:
`Verdicts` below returns the verdicts a test scripts, after checking that both members it is
given really answer with the identities the target reports.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from canary_helpers import prepare_two, prod_serving_v1
from helpers import read_state, require_tool, run_cli
from test_local_abort import Load, cli_env, finished, other_iris, start_paused

from mlops_cli.canary import engine, haproxy
from mlops_cli.errors import StageFailed
from mlops_cli.state import State
from mlops_cli.targets import Release, no_journal
from mlops_cli.targets.local import LocalTarget, _alive

pytestmark = pytest.mark.integration

STEPS = [
    {"set_weight": 10},
    {"pause": 1},
    {"analysis": "default"},
    {"set_weight": 50},
    {"pause": 1},
    {"analysis": "default"},
]


@pytest.fixture(autouse=True)
def _haproxy():
    require_tool("haproxy")


@dataclass(frozen=True)
class Result:
    """The shape of mlops_cli.canary.analysis.AnalysisResult (verdict, reason, measurements, to_dict)."""

    template: str
    verdict: str
    reason: str
    measurements: tuple = ()

    def to_dict(self) -> dict:
        return {
            "template": self.template,
            "verdict": self.verdict,
            "reason": self.reason,
            "measurements": list(self.measurements),
        }


@dataclass
class Verdicts:
    """An injected analysis: checks the members it is given answer as themselves, then returns scripted verdicts."""

    script: list[str]
    calls: list[dict] = field(default_factory=list)

    def __call__(self, settings, template, canary, *, window_s, sleep):
        for member in (canary.stable, canary.canary):
            ready = httpx.get(member.url + "/health/ready", timeout=5).json()
            assert ready["instance"] == member.handle and ready["revision"] == member.revision
            assert httpx.get(member.metrics_url, timeout=5).status_code == 200
        assert canary.canary.selector == f'track="canary",env="{canary.env}"'
        verdict = self.script[min(len(self.calls), len(self.script) - 1)]
        self.calls.append({"template": template, "weight": canary.weight, "window_s": window_s})
        m = {
            "metric": "prediction_shift",
            "kind": "prediction_shift",
            "canary": 0.4,
            "stable": 0.0,
            "outcome": verdict,
            "detail": f"scripted {verdict}",
        }
        return Result(template, verdict, f"scripted {verdict} at {canary.weight} %", (m,))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, iris_artifact):
    root = tmp_path_factory.mktemp("canary")
    return prepare_two(root, iris_artifact, other_iris(root))


@pytest.fixture
def two_revisions(make_settings, prepared, tmp_path):
    """prod serves model version 1; version 2 is smoke-tested and ready for prod (rollout.strategy canary)."""

    def make(canary_analysis=None, **rollout):
        s = make_settings(
            workdir=tmp_path / "work",
            model=prepared.state["model"]["ref"],
            store={"path": str(prepared.root / "work" / "store")},
            rollout={"strategy": "canary", "steps": STEPS, "analysis_retry_s": 0.5, **rollout},
            **({"canary_analysis": canary_analysis} if canary_analysis else {}),
        )
        prod_serving_v1(prepared, s)
        return s

    return make


def instance_at(url: str) -> str:
    return httpx.get(url + "/health/ready", timeout=5).json()["instance"]


def only_one_server(s, prod: dict) -> None:
    """Exactly one server of ours in prod, the one state names, answering on the port; no HAProxy left."""
    observed = LocalTarget(s).observe("prod")
    assert [srv.ident for srv in observed.servers] == [prod["handle"]]
    assert observed.serving == prod["handle"]
    assert haproxy.running_pid(LocalTarget(s).run_dir, "prod") is None
    assert not LocalTarget(s).canary_file("prod").exists()


def test_haproxy_splits_by_weight_under_load_and_abort_leaves_stable(two_revisions):
    s = two_revisions()
    state = State.load(s.workdir)
    current = state.deployments["prod"]
    target = LocalTarget(s)
    url = current.url
    with Load(url) as load:
        time.sleep(0.3)
        canary = target.canary_start("prod", Release(bundle=Path(state.bundle.path)), current, no_journal)
        assert canary.url == url and canary.weight == 0
        assert not _alive(current.pid)  # the server that held the port drained; HAProxy took it
        sd = json.loads(target.file_sd_path("prod").read_text())
        assert {t["labels"]["track"]: t["targets"][0] for t in sd} == {
            "stable": canary.stable.url.removeprefix("http://"),
            "canary": canary.canary.url.removeprefix("http://"),
        }
        shares = {}
        with httpx.Client(base_url=url, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for weight in (10, 50, 100):
                canary = target.canary_set_weight(canary, weight, no_journal)
                seen = collections.Counter(http.get("/health/ready").json()["instance"] for _ in range(200))
                shares[weight] = seen[canary.canary.handle] / 200
                assert set(seen) <= {canary.canary.handle, canary.stable.handle}
        print(
            f"canary share at 10/50/100 %: {shares}; load: {load.ok} answered, {load.failed} failed {load.failures[:3]}"
        )
        assert abs(shares[10] - 0.10) <= 0.05 and abs(shares[50] - 0.50) <= 0.12 and shares[100] == 1.0
        assert haproxy.current_weights(haproxy.paths(target.run_dir, "prod")[1]) == {"stable": 0, "canary": 100}
        restored = target.canary_abort(canary, no_journal)
        time.sleep(0.5)
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 50
    assert restored is not None and restored.revision == current.revision
    assert instance_at(url) == restored.handle  # stable (revision 1, model version 1) serves again on the port
    assert haproxy.running_pid(target.run_dir, "prod") is None
    for member in (canary.stable, canary.canary):  # the two servers behind HAProxy are gone
        with pytest.raises(httpx.HTTPError):
            httpx.get(member.url + "/health/ready", timeout=2)


def test_good_canary_is_promoted_through_all_steps_with_no_failed_request(two_revisions):
    s = two_revisions()
    state = State.load(s.workdir)
    analysis = Verdicts(["pass"])
    with Load(state.deployments["prod"].url) as load:
        time.sleep(0.3)
        record = engine.run(s, state, "prod", LocalTarget(s), analyse=analysis)
        time.sleep(0.5)
    assert load.failed == 0, load.failures[:5]
    assert [c["weight"] for c in analysis.calls] == [10, 50]
    assert all(c["window_s"] >= 1 for c in analysis.calls)  # measured over the time since the weight changed
    saved = read_state(s.workdir)
    prod = saved["deployments"]["prod"]
    assert prod["model_version"] == "2" and prod["revision"] == 2 == record.revision
    canary = saved["canaries"]["prod"]
    assert canary["status"] == "promoted" and canary["weight"] == 100
    assert [st["outcome"] for st in canary["steps"]] == ["done", "done", "pass", "done", "done", "pass"]
    assert canary["steps"][2]["analysis"]["measurements"][0]["metric"] == "prediction_shift"
    assert saved["rollouts"]["prod"]["outcome"] == "succeeded" and saved["intents"] == {}
    only_one_server(s, prod)
    sd = json.loads(LocalTarget(s).file_sd_path("prod").read_text())
    assert [t["labels"]["track"] for t in sd] == ["stable"] and sd[0]["labels"]["revision"] == "2"


def test_failing_analysis_aborts_at_the_first_analysis_and_stable_serves(two_revisions):
    s = two_revisions()
    state = State.load(s.workdir)
    analysis = Verdicts(["fail"])
    with Load(state.deployments["prod"].url) as load:
        time.sleep(0.3)
        with pytest.raises(StageFailed) as failed:
            engine.run(s, state, "prod", LocalTarget(s), analyse=analysis)
        time.sleep(0.5)
    assert load.failed == 0, load.failures[:5]
    message = str(failed.value)
    assert "\n" not in message
    assert message == (
        "canary aborted, revision 1 still serves: analysis 'default' failed at 10 %: scripted fail at 10 %"
    )
    assert len(analysis.calls) == 1
    saved = read_state(s.workdir)
    canary = saved["canaries"]["prod"]
    assert canary["status"] == "aborted" and "analysis 'default' failed at 10 %" in canary["reason"]
    assert [st["outcome"] for st in canary["steps"]] == ["done", "done", "fail", "pending", "pending", "pending"]
    prod = saved["deployments"]["prod"]
    assert prod["model_version"] == "1" and prod["revision"] == 1
    assert saved["rollouts"]["prod"]["outcome"] == "rolled-back" and saved["rollouts"]["prod"]["failed_revision"] == 2
    only_one_server(s, prod)


def canary_env(s, steps) -> dict[str, str]:
    return {
        **cli_env(s),
        "MLOPS_ROLLOUT__STRATEGY": "canary",
        "MLOPS_ROLLOUT__STEPS": json.dumps(steps),
        "MLOPS_STORE__PATH": str(s.store_path),
    }


def test_kill_9_mid_canary_is_undone_by_the_next_run(two_revisions):
    s = two_revisions()
    url = read_state(s.workdir)["deployments"]["prod"]["url"]
    env = canary_env(s, [{"set_weight": 30}, {"pause": 30}])
    with Load(url) as load:
        time.sleep(0.3)
        cli, _ = start_paused(["rolling-update"], s.workdir, env, "pause-2")
        cli.kill()
        assert finished(cli) == -signal.SIGKILL
        time.sleep(0.5)  # HAProxy still serves, 30 % to the canary: nobody owns it now
        saved = read_state(s.workdir)
        assert saved["intents"]["prod"]["action"] == "canary" and saved["intents"]["prod"]["step"] == "pause-2"
        assert saved["canaries"]["prod"]["status"] == "running" and saved["canaries"]["prod"]["weight"] == 30
        status = run_cli("status", "--workdir", str(s.workdir), env=env)
        assert status.returncode == 0
        assert "DISAGREES  prod: an interrupted canary of revision 2 (step pause-2" in status.stdout
        shown = run_cli("canary", "status", "--workdir", str(s.workdir), "--json", env=env)
        assert json.loads(shown.stdout)["live_weight"] == 30 and json.loads(shown.stdout)["running"] is False
        # the next run reconciles first: the canary is undone (stable serves), then this run's own canary starts
        again = subprocess.run(
            [sys.executable, "-m", "mlops_cli.cli", "rolling-update", "--workdir", str(s.workdir)],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")},
                **canary_env(s, [{"set_weight": 10}]),
            },
            capture_output=True,
            text=True,
            timeout=240,
        )
        time.sleep(0.5)
    assert (
        "reconciled prod: found interrupted canary of revision 2 (at step pause-2): undone, revision 1 serves"
        in again.stderr
    ), again.stderr
    assert again.returncode == 0, again.stderr
    assert load.failed == 0, load.failures[:5]
    saved = read_state(s.workdir)
    assert saved["deployments"]["prod"]["model_version"] == "2" and saved["canaries"]["prod"]["status"] == "promoted"
    only_one_server(s, saved["deployments"]["prod"])


@pytest.mark.parametrize("action", ["promote", "abort"])
def test_canary_promote_and_abort_reach_a_waiting_rolling_update(two_revisions, action):
    s = two_revisions()
    env = canary_env(s, [{"set_weight": 20}, {"pause": {}}, {"set_weight": 60}])  # waits for a human
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}, **env}
    cli = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "rolling-update", "--workdir", str(s.workdir)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until it waits in the pause
            canary = (read_state(s.workdir).get("canaries") or {}).get("prod") or {}
            if canary.get("current_step") == 2:
                break
            assert cli.poll() is None, cli.communicate()
            time.sleep(0.2)
        shown = run_cli("canary", "status", "--workdir", str(s.workdir), env=env)
        assert f"(rolling-update pid {cli.pid}), 20 % to the canary (HAProxy says 20 %)" in shown.stdout
        answer = run_cli("canary", action, "--workdir", str(s.workdir), env=env, timeout=120)
        assert answer.returncode == 0, answer.stderr
        assert (
            f"asked the running rolling-update (pid {cli.pid}) to {action} the canary of prod; it took the request"
            in answer.stdout
        )
        _, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    saved = read_state(s.workdir)
    canary = saved["canaries"]["prod"]
    if action == "promote":
        assert cli.returncode == 0, err
        assert canary["status"] == "promoted" and canary["steps"][2]["outcome"] == "skipped"
        assert saved["deployments"]["prod"]["model_version"] == "2"
    else:
        assert cli.returncode == 1 and "canary aborted, revision 1 still serves: aborted by request" in err
        assert len(err.strip().splitlines()[-1:]) == 1 and "Traceback" not in err
        assert canary["status"] == "aborted" and saved["deployments"]["prod"]["model_version"] == "1"
    only_one_server(s, saved["deployments"]["prod"])
