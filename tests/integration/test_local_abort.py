"""Production stays true whatever happens to the CLI (issue 10): kill -9 and SIGTERM at chosen
steps of a rolling update under load, two runs on one workdir, a server timed out while loading,
and stop/status with a broken config or state file. Real servers, real signals, real CLI processes.

The CLI is paused at a named step by the documented test hook MLOPS_TEST_PAUSE_AT=<step>
(mlops_cli/targets/local.py: pause_at), which says "paused before step <step>" on stderr.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import Load, read_state, register_iris, run_cli, slow_model
from test_slack_notifier import SlackWebhookDouble

from mlops_cli.stages import assemble_server, deploy_to_test_env, rolling_update, smoke, validate_model
from mlops_cli.targets import port_free
from mlops_cli.targets.local import LocalTarget, _alive

pytestmark = pytest.mark.integration

ROW = [5.1, 3.5, 1.4, 0.2]


def cli_env(s) -> dict[str, str]:
    return {
        "MLOPS_DEPLOY__TEST__PORT": str(s.deploy.test.port),
        "MLOPS_DEPLOY__PROD__PORT": str(s.deploy.prod.port),
        "MLOPS_VALIDATION__THRESHOLDS": '{"accuracy": ">= 0.9"}',
    }  # validate-model needs one


def prepare(make_settings, settings, ref, to_prod: bool):
    s = make_settings(workdir=settings.workdir, model=ref, deploy=settings.deploy.model_dump(mode="json"))
    for stage in (validate_model, assemble_server, deploy_to_test_env, smoke) + ((rolling_update,) if to_prod else ()):
        stage.run(s)
    return s


def other_iris(tmp_path: Path) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    data = load_iris()
    path = tmp_path / "tree.joblib"
    joblib.dump(DecisionTreeClassifier(max_depth=3, random_state=0).fit(data.data, data.target), path)
    return path


def start_paused(args: list[str], workdir: Path, env: dict[str, str], step: str) -> tuple[subprocess.Popen, list[str]]:
    """The real CLI, paused before `step`; returns once it says so (bounded)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    environ.update(env, MLOPS_TEST_PAUSE_AT=step)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", *args, "--workdir", str(workdir)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    paused = threading.Event()

    def read() -> None:
        with proc.stderr:
            for line in proc.stderr:
                lines.append(line)
                if f"paused before step {step}" in line:
                    paused.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.reader = reader  # type: ignore[attr-defined]  # joined by finished()
    if not paused.wait(90):
        proc.kill()
        pytest.fail(f"the CLI never paused before {step}: {''.join(lines)}")
    return proc, lines


def finished(proc: subprocess.Popen, timeout: float = 60) -> int:
    """Wait for a start_paused CLI to exit and for its stderr to be read to the end."""
    proc.wait(timeout=timeout)
    proc.reader.join(timeout=10)  # type: ignore[attr-defined]
    return proc.returncode


def ours(s, env: str):
    return LocalTarget(s).observe(env)


@pytest.mark.parametrize(
    "step, sig",
    [
        ("loading", signal.SIGTERM),  # the new revision is loading: it is stopped, the old one serves
        ("switching", signal.SIGKILL),  # loaded, never told to listen: the next run stops it
        ("switching", signal.SIGINT),  # Ctrl-C
        ("draining", signal.SIGKILL),  # the new revision already serves: the next run finishes the rollout
        ("draining", signal.SIGTERM),
    ],
)
def test_abort_of_rolling_update_leaves_one_known_revision(make_settings, settings, iris_artifact, tmp_path, step, sig):
    s1 = prepare(make_settings, settings, register_iris(settings, iris_artifact), to_prod=True)
    before = read_state(s1.workdir)["deployments"]["prod"]
    s2 = prepare(make_settings, settings, register_iris(settings, other_iris(tmp_path)), to_prod=False)
    url = before["url"]
    slack = SlackWebhookDouble()  # the notifier the aborted run tells
    notify = {"MLOPS_NOTIFY__NOTIFIERS": '["slack"]', "MLOPS_NOTIFY__SLACK__WEBHOOK_URL": slack.url}
    with Load(url) as load:
        time.sleep(0.5)
        cli, lines = start_paused(["rolling-update"], s2.workdir, {**cli_env(s2), **notify}, step)
        cli.send_signal(sig)
        finished(cli)
        err = "".join(lines)
        if sig != signal.SIGKILL:
            assert cli.returncode == 130 and "Traceback" not in err
            assert f"reconciled prod: aborted rolling-update of revision 2 (at step {step})" in err
        else:
            assert cli.returncode == -signal.SIGKILL
            status = run_cli("status", "--workdir", str(s2.workdir), env=cli_env(s2))
            assert status.returncode == 0
            assert "DISAGREES  prod: an interrupted rolling-update of revision 2" in status.stdout
            # the next run reconciles first (here: a rolling update of the same bundle)
            rolling_update.run(s2)
        time.sleep(0.5)
    state = read_state(s2.workdir)
    prod = state["deployments"]["prod"]
    observed = ours(s2, "prod")
    assert [srv.ident for srv in observed.servers] == [prod["handle"]]  # exactly one server of ours ...
    assert observed.serving == prod["handle"]  # ... and it is the one state names
    assert state["intents"] == {}
    served_new = step == "draining"
    if sig != signal.SIGKILL:
        rollout = state["rollouts"]["prod"]
        assert rollout["outcome"] == ("succeeded" if served_new else "rolled-back")
        assert f"aborted rolling-update of revision 2 (at step {step})" in rollout["message"]
        assert prod["model_version"] == ("2" if served_new else "1")
        told = json.dumps(slack.received)
        assert len(slack.received) == 1 and f"aborted rolling-update of revision 2 (at step {step})" in told
    else:  # the repair, then the next release on top of it
        assert prod["model_version"] == "2" and prod["revision"] == (3 if served_new else 2)
    assert not _alive(before["pid"]) or prod["pid"] == before["pid"]
    print(f"{step}/{signal.Signals(sig).name}: {load.ok} answered, {load.failed} failed")
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 20
    stopped = run_cli("stop", "--workdir", str(s2.workdir), env=cli_env(s2))
    assert stopped.returncode == 0, stopped.stderr
    assert port_free("127.0.0.1", s2.deploy.prod.port) and ours(s2, "prod").servers == ()
    slack.close()


def test_an_orphan_newer_server_is_stopped_and_cannot_keep_production(make_settings, settings, iris_artifact, tmp_path):
    """A newer server whose CLI died after the handover takes the port; status says so, the next run repairs."""
    prepare(make_settings, settings, register_iris(settings, iris_artifact), to_prod=True)
    s2 = prepare(make_settings, settings, register_iris(settings, other_iris(tmp_path)), to_prod=False)
    cli, _ = start_paused(["rolling-update"], s2.workdir, cli_env(s2), "draining")
    cli.kill()
    finished(cli)
    state = read_state(s2.workdir)
    intent = state["intents"]["prod"]
    # Someone "repairs" by hand the wrong way: drops the journal. The newer server is now an orphan.
    from mlops_cli.state import State

    st = State.load(s2.workdir)
    st.intents.clear()
    st.save(s2.workdir)
    status = run_cli("status", "--workdir", str(s2.workdir), env=cli_env(s2))
    assert f"DISAGREES  prod: revision 2 (pid {intent['pid']}) runs but state does not name it" in status.stdout
    assert "DISAGREES  prod: the port is answered by revision 2" in status.stdout
    result = run_cli("rolling-update", "--workdir", str(s2.workdir), env=cli_env(s2))
    assert result.returncode == 0, result.stderr
    assert f"stopped revision 2 (pid {intent['pid']}), which state does not name" in result.stderr
    assert not _alive(intent["pid"])
    prod = read_state(s2.workdir)["deployments"]["prod"]
    assert ours(s2, "prod").serving == prod["handle"] and prod["model_version"] == "2"
    assert httpx.get(prod["url"] + "/health/ready").json()["instance"] == prod["handle"]


def test_two_runs_on_one_workdir_the_second_names_the_holder(make_settings, settings, iris_artifact):
    ref = register_iris(settings, iris_artifact)
    s = make_settings(workdir=settings.workdir, model=ref, deploy=settings.deploy.model_dump(mode="json"))
    first, _ = start_paused(["pipeline", "run", "--model", ref], s.workdir, cli_env(s), "switching")
    try:
        second = run_cli("pipeline", "run", "--model", ref, "--workdir", str(s.workdir), env=cli_env(s), timeout=60)
        assert second.returncode == 75
        assert f"is in use by pid {first.pid} (mlops pipeline run, since " in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        # With a wait, the second run waits for the first, then runs.
        waiting = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlops_cli.cli",
                "status",
                "--workdir",
                str(s.workdir),
                "--move-aside-corrupt-state",
            ],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")},
                **cli_env(s),
                "MLOPS_LOCK_WAIT_S": "60",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        assert waiting.poll() is None  # still waiting for the lock
    finally:
        first.send_signal(signal.SIGTERM)
        finished(first)
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and "waiting up to 60 s for pid" in err
    assert first.returncode == 130
    assert ours(s, "test").servers == ()  # the aborted pipeline left nothing running


def test_revision_timed_out_while_loading_never_accepts_a_connection(make_settings, settings, tmp_path):
    model, slow = slow_model(tmp_path, seconds=5)
    ref = register_iris(settings, model, framework="python", class_name="Slow", labels=None, name="slow")
    s = make_settings(
        workdir=settings.workdir, model=ref, deploy={**settings.deploy.model_dump(mode="json"), "ready_timeout_s": 3}
    )
    validate_model.run(s)
    assemble_server.run(s)
    slow.touch()  # from now on it takes 5 s to load: longer than ready_timeout_s
    accepted, refused = [], 0
    stop = threading.Event()

    def probe() -> None:
        nonlocal refused
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", s.deploy.test.port), timeout=1):
                    accepted.append(time.monotonic())
            except OSError:
                refused += 1
            time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        from mlops_cli.errors import StageFailed

        with pytest.raises(StageFailed, match="did not become ready within 3 s"):
            deploy_to_test_env.run(s)
        time.sleep(1.0)  # the server exited once its load ended; it must not have listened then either
    finally:
        stop.set()
        prober.join(timeout=30)
    log = (s.workdir / "logs" / "test-1.log").read_text()
    assert accepted == [] and refused > 50
    assert "stopped before it listened" in log
    assert ours(s, "test").servers == ()


def test_stop_and_status_work_with_a_corrupt_state_file(make_settings, settings, iris_artifact):
    s = prepare(make_settings, settings, register_iris(settings, iris_artifact), to_prod=False)
    pid = read_state(s.workdir)["deployments"]["test"]["pid"]
    state_file = s.workdir / "state.json"
    state_file.write_text("{ not json")
    status = run_cli("status", "--workdir", str(s.workdir), env=cli_env(s))
    assert status.returncode == 0, status.stderr
    assert "WARNING    state file" in status.stdout and "is not valid" in status.stdout
    assert f"DISAGREES  test: revision 1 (pid {pid}) runs but state does not name it" in status.stdout
    stopped = run_cli("stop", "--workdir", str(s.workdir), env=cli_env(s))
    assert stopped.returncode == 0, stopped.stderr
    assert "warning: state file" in stopped.stdout and "stopped test" in stopped.stdout
    assert not _alive(pid) and port_free("127.0.0.1", s.deploy.test.port)
    assert state_file.read_text() == "{ not json"  # never moved or overwritten unasked
    moved = run_cli("status", "--workdir", str(s.workdir), "--move-aside-corrupt-state", env=cli_env(s))
    assert moved.returncode == 0 and "moved it aside to" in moved.stdout
    assert not state_file.exists() and list(s.workdir.glob("state.json.corrupt-*"))


def test_stop_works_with_a_broken_config_file(make_settings, settings, iris_artifact, tmp_path):
    s = prepare(make_settings, settings, register_iris(settings, iris_artifact), to_prod=False)
    pid = read_state(s.workdir)["deployments"]["test"]["pid"]
    cwd = tmp_path / "project"
    cwd.mkdir()
    (cwd / "mlops.yaml").write_text("deploy: [unclosed\n")
    status = run_cli("status", "--workdir", str(s.workdir), cwd=cwd)
    assert (
        status.returncode == 0 and "malformed YAML" in status.stdout and "using the default settings" in status.stdout
    )
    stopped = run_cli("stop", "--workdir", str(s.workdir), cwd=cwd)
    assert stopped.returncode == 0, stopped.stderr
    assert "malformed YAML" in stopped.stdout and "stopped test" in stopped.stdout
    assert not _alive(pid) and port_free("127.0.0.1", s.deploy.test.port)
    assert "test" not in read_state(s.workdir)["deployments"]


def test_prod_process_killed_is_back_within_seconds_and_status_says_so(make_settings, settings, iris_artifact):
    s = prepare(make_settings, settings, register_iris(settings, iris_artifact), to_prod=True)
    prod = read_state(s.workdir)["deployments"]["prod"]
    from mlops_cli.state import State

    report = LocalTarget(s).supervision(State.load(s.workdir).deployments["prod"])
    assert report is not None and report["restarts"] == 0
    server_pid = report["server_pid"]
    assert server_pid != prod["pid"] and _alive(server_pid)
    os.kill(server_pid, signal.SIGKILL)
    killed = time.monotonic()
    back = None
    while time.monotonic() - killed < 30:
        try:
            answer = httpx.get(prod["url"] + "/health/ready", timeout=1)
            if answer.status_code == 200 and answer.json()["pid"] != server_pid:
                back = time.monotonic() - killed
                assert answer.json()["instance"] == prod["handle"]  # the same deployment, restarted
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    print(f"prod back {back:.2f} s after kill -9 of its server")
    assert back is not None and back < 20
    status = run_cli("status", "--workdir", str(s.workdir), env=cli_env(s))
    assert status.returncode == 0
    assert "(running, restarted 1 time(s) by its supervisor, last after exit code -9" in status.stdout
    assert "DISAGREES" not in status.stdout
    assert httpx.post(prod["url"] + "/v1/predict", json={"instances": [ROW]}).status_code == 200
    stopped = run_cli("stop", "--workdir", str(s.workdir), env=cli_env(s))
    assert stopped.returncode == 0 and port_free("127.0.0.1", s.deploy.prod.port)
    assert ours(s, "prod").servers == ()


@pytest.mark.parametrize("restart", ["on-failure", "no"])
def test_a_bundle_older_than_the_identity_flags_fails_at_once_in_one_line(make_settings, tmp_path, restart):
    """A bundle assembled before --instance/--revision/--await-handover: a clear error, not a ready timeout."""
    from mlops_cli.errors import StageFailed
    from mlops_cli.targets import Release

    older = tmp_path / "older-bundle"
    (older / "serving").mkdir(parents=True)
    (older / "serving" / "__init__.py").write_text("")
    # the command line of the server before issue 10, as argparse parses it
    (older / "serving" / "__main__.py").write_text(
        "import argparse\n"
        "parser = argparse.ArgumentParser(prog='python -m serving')\n"
        "parser.add_argument('bundle')\n"
        "for flag in ('--host', '--port', '--ready-file'):\n"
        "    parser.add_argument(flag)\n"
        "parser.parse_args()\n"
    )
    s = make_settings(deploy={"restart": restart, "ready_timeout_s": 120})
    started = time.monotonic()
    with pytest.raises(StageFailed) as failed:
        LocalTarget(s).deploy("test", Release(bundle=older), None)
    assert time.monotonic() - started < 60  # not the 120 s ready timeout
    assert "older than the identity flags" in failed.value.message and "--instance" in failed.value.message
    assert "\n" not in failed.value.message and "assemble-server" in failed.value.hint
    assert port_free("127.0.0.1", s.deploy.test.port) and ours(s, "test").servers == ()


def test_a_supervisor_killed_takes_its_server_along_and_status_says_so(make_settings, settings, iris_artifact):
    """kill -9 of prod's supervisor: its server dies with it (PR_SET_PDEATHSIG), nothing unowned keeps the port,
    and `mlops status` says prod is not running. Neither process holds the workdir lock's descriptor."""
    s = prepare(make_settings, settings, register_iris(settings, iris_artifact), to_prod=True)
    prod = read_state(s.workdir)["deployments"]["prod"]
    from mlops_cli.state import State

    server_pid = LocalTarget(s).supervision(State.load(s.workdir).deployments["prod"])["server_pid"]
    lock = str((s.workdir / ".mlops.lock").resolve())
    for pid in (prod["pid"], server_pid):  # started while the stage held the lock: the lock must not outlive it
        held = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                held.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        assert lock not in held, (pid, held)
    os.kill(prod["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server_pid)
    deadline = time.monotonic() + 20
    while not port_free("127.0.0.1", s.deploy.prod.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_free("127.0.0.1", s.deploy.prod.port)
    status = run_cli("status", "--workdir", str(s.workdir), env=cli_env(s))
    assert status.returncode == 0, status.stderr
    assert "NOT RUNNING" in status.stdout
    assert (
        f"DISAGREES  prod: state names revision {prod['revision']} (pid {prod['pid']}) but it is not running"
        in status.stdout
    )
