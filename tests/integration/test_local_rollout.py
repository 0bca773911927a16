"""Local deploy target: zero failed requests during a rolling update, and every way a start fails."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import read_state, register_iris, slow_model

from mlops_cli.errors import PrerequisiteError, StageFailed, UsageError
from mlops_cli.stages import assemble_server, deploy_to_test_env, rolling_update, smoke, validate_model
from mlops_cli.targets.local import _alive

pytestmark = pytest.mark.integration


def validated_and_assembled(make_settings, settings, ref, **overrides):
    overrides.setdefault("deploy", settings.deploy.model_dump(mode="json"))
    s = make_settings(workdir=settings.workdir, model=ref, **overrides)
    validate_model.run(s)
    assemble_server.run(s)
    return s


def ship(make_settings, settings, ref, to_prod=True, **overrides):
    """validate -> assemble -> deploy-test -> smoke-test [-> rolling-update] for ref."""
    overrides.setdefault("deploy", settings.deploy.model_dump(mode="json"))
    s = make_settings(workdir=settings.workdir, model=ref, **overrides)
    for stage in (validate_model, assemble_server, deploy_to_test_env, smoke) + ((rolling_update,) if to_prod else ()):
        stage.run(s)
    return s


def other_iris(tmp_path: Path) -> Path:
    """A second, different iris model (other hyper-parameters, so another sha256)."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    data = load_iris()
    path = tmp_path / "tree.joblib"
    joblib.dump(DecisionTreeClassifier(max_depth=3, random_state=0).fit(data.data, data.target), path)
    return path


def test_rolling_update_fails_no_request(make_settings, settings, iris_artifact, tmp_path):
    ship(make_settings, settings, register_iris(settings, iris_artifact))
    url = read_state(settings.workdir)["deployments"]["prod"]["url"]
    old_pid = read_state(settings.workdir)["deployments"]["prod"]["pid"]
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    failures: list[str] = []
    versions: set[str] = set()
    lock = threading.Lock()

    def client(keep_alive: bool) -> None:
        body = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
        deadline = time.monotonic() + 120  # bounded even if the test body hangs
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(base_url=url, timeout=10, limits=limits) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    answer = http.post("/v1/predict", json=body)
                    ok = answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "setosa"
                    detail = f"status {answer.status_code}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                with lock:
                    counts["ok" if ok else "failed"] += 1
                    if not ok:
                        failures.append(detail)

    def watcher() -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.is_set():
                try:
                    versions.add(http.get("/health/ready").json().get("version"))
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(6)] + [
        threading.Thread(target=watcher)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        before = counts["ok"]
        ship(make_settings, settings, register_iris(settings, other_iris(tmp_path)))
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    prod = read_state(settings.workdir)["deployments"]["prod"]
    print(f"rolling update under load: {counts['ok']} answered, {counts['failed']} failed")
    assert failures == [] and counts["failed"] == 0
    assert before > 0 and counts["ok"] > before + 50
    assert (prod["revision"], prod["previous_revision"], prod["model_version"]) == (2, 1, "2")
    assert {"1", "2"} <= versions  # both revisions answered on the same port
    assert not _alive(old_pid)


def test_port_in_use_by_another_program(make_settings, settings, iris_artifact):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.deploy.test.port))
        squatter.listen()
        with pytest.raises(UsageError, match=rf"port {settings.deploy.test.port} on 127.0.0.1 is already in use"):
            ship(make_settings, settings, register_iris(settings, iris_artifact), to_prod=False)
    state = read_state(settings.workdir)
    assert state["stages"]["deploy-test"]["status"] == "failed" and state["deployments"] == {}


def test_server_that_never_becomes_ready_is_stopped(make_settings, settings, tmp_path):
    model, slow = slow_model(tmp_path)
    ref = register_iris(settings, model, framework="python", class_name="Slow", labels=None, name="slow")
    s = validated_and_assembled(
        make_settings, settings, ref, deploy={**settings.deploy.model_dump(mode="json"), "ready_timeout_s": 3}
    )
    slow.touch()
    with pytest.raises(
        StageFailed, match=r"did not become ready within 3 s .*it was stopped \(it never took a connection\); .*log: "
    ):
        deploy_to_test_env.run(s)
    assert read_state(settings.workdir)["deployments"] == {}
    with socket.socket() as probe:  # the port is free again: nothing was left running
        probe.bind(("127.0.0.1", settings.deploy.test.port))


def test_model_that_fails_to_load_exits_at_start_up_with_the_reason(make_settings, settings, tmp_path):
    gone = tmp_path / "weights-gone"  # missing weights once validated (validation's trial run loads it too)
    model = tmp_path / "broken.py"
    model.write_text(
        "import os\nimport numpy as np\nclass Broken:\n    def __init__(self):\n"
        f"        if os.path.exists({str(gone)!r}):\n"
        "            raise RuntimeError('weights missing')\n"
        "    def predict(self, X):\n        return np.zeros(len(X), dtype=int)\n"
        "    def predict_proba(self, X):\n        return np.full((len(X), 3), 1 / 3)\n"
    )
    ref = register_iris(settings, model, framework="python", class_name="Broken", labels=None, name="broken")
    s = validated_and_assembled(make_settings, settings, ref)
    gone.touch()
    with pytest.raises(StageFailed, match=r"exited during start-up \(exit code 1\); last log line: .*weights missing"):
        deploy_to_test_env.run(s)
    assert read_state(settings.workdir)["deployments"] == {}


def test_failed_rolling_update_leaves_the_old_revision_serving(make_settings, settings, iris_artifact, tmp_path):
    ship(make_settings, settings, register_iris(settings, iris_artifact))
    prod = read_state(settings.workdir)["deployments"]["prod"]
    model, slow = slow_model(tmp_path)
    ref = register_iris(settings, model, framework="python", class_name="Slow", labels=None)
    # Pretend the slow model passed its smoke test: what matters here is production's reaction.
    s = validated_and_assembled(
        make_settings, settings, ref, deploy={**settings.deploy.model_dump(mode="json"), "ready_timeout_s": 3}
    )
    slow.touch()
    from mlops_cli.state import SmokeRecord, State

    state = State.load(s.workdir)
    state.smoke = SmokeRecord(
        passed=True,
        url="-",
        model_sha256=state.bundle.model_sha256,
        bundle_digest=state.bundle.bundle_digest,
        requests=1,
        p95_ms=1.0,
    )
    state.save(s.workdir)
    with pytest.raises(StageFailed, match=r"rolling update failed, revision 1 \(local:iris@1\) still serves"):
        rolling_update.run(s)
    after = read_state(settings.workdir)["deployments"]["prod"]
    assert after == prod and _alive(prod["pid"])
    answer = httpx.post(prod["url"] + "/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert answer.status_code == 200


def test_smoke_test_enforces_the_latency_budget(make_settings, settings, iris_artifact):
    with pytest.raises(StageFailed, match=r"p95 latency .* is over the budget of 0.001 ms"):
        ship(
            make_settings,
            settings,
            register_iris(settings, iris_artifact),
            to_prod=False,
            smoke={"p95_ms": 0.001, "requests": 5},
        )
    state = read_state(settings.workdir)
    assert state["smoke"]["passed"] is False
    with pytest.raises(PrerequisiteError, match="smoke test of the current bundle failed"):
        rolling_update.run(make_settings(workdir=settings.workdir))


def test_rolling_update_needs_a_smoke_test(make_settings, settings, iris_artifact):
    s = make_settings(
        workdir=settings.workdir,
        model=register_iris(settings, iris_artifact),
        deploy=settings.deploy.model_dump(mode="json"),
    )
    validate_model.run(s)
    assemble_server.run(s)
    with pytest.raises(PrerequisiteError, match="run `mlops smoke-test` first"):
        rolling_update.run(s)
    assert "prod" not in read_state(settings.workdir)["deployments"]


def test_sigterm_during_deploy_stops_the_half_started_server(make_settings, settings, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    model, slow = slow_model(tmp_path)
    ref = register_iris(settings, model, framework="python", class_name="Slow", labels=None, name="slow")
    s = validated_and_assembled(make_settings, settings, ref)
    slow.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["MLOPS_DEPLOY__TEST__PORT"] = str(s.deploy.test.port)
    cli = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "deploy-test", "--workdir", str(s.workdir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    bundle = read_state(s.workdir)["bundle"]["path"]
    deadline = time.monotonic() + 30
    server_pids: list[int] = []
    while len(server_pids) < 2 and time.monotonic() < deadline:  # supervisor and server started, loading
        server_pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _alive(int(p), bundle)]
        time.sleep(0.1)
    assert len(server_pids) == 2  # the supervisor (deploy.restart: on-failure) and its server
    time.sleep(0.5)
    cli.send_signal(signal.SIGTERM)
    _, err = cli.communicate(timeout=30)
    assert cli.returncode == 130 and "error: interrupted" in err and "Traceback" not in err
    assert not any(_alive(pid) for pid in server_pids)
    assert read_state(s.workdir)["stages"]["deploy-test"]["status"] == "failed"
