"""Container target (podman) under an abort (issue 10): a CLI killed mid-rollout, after the new
container took traffic, is repaired by the next run; containers are found by their labels and
counted as ready only when they answer with their own name."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from helpers import read_state, register_iris
from test_image_pipeline import image_settings, other_model

from mlops_cli import run_all
from mlops_cli.stages import assemble_server, build_image, deploy_to_test_env, rolling_update, smoke, validate_model
from mlops_cli.targets import port_free
from mlops_cli.targets.container import ContainerTarget

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)  # two image builds and three rollouts on a shared 2-core machine
def test_container_rollout_killed_after_the_handover_is_finished_by_the_next_run(
    make_settings, settings, registry, base_image, iris_artifact, tmp_path
):
    first = image_settings(
        make_settings, settings, "buildah", registry, base_image, model=register_iris(settings, iris_artifact)
    )
    assert run_all.run(first).passed
    prod = read_state(settings.workdir)["deployments"]["prod"]
    assert httpx.get(prod["url"] + "/health/ready").json()["instance"] == prod["handle"]

    from mlops_cli.status import status

    report = status(first)
    assert report.running["prod"] and report.disagreements == []

    # supervision: podman's --restart=on-failure brings prod back when its main process is killed
    def host_pid() -> str:
        return subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Pid}}", prod["handle"]],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()

    pid = host_pid()
    os.kill(int(pid), 9)
    deadline, back = time.monotonic() + 120, None  # podman restarts it at once; the server loads on a busy machine
    while time.monotonic() < deadline and back is None:
        time.sleep(0.5)
        try:
            answer = httpx.get(prod["url"] + "/health/ready", timeout=2)
            back = answer.json() if answer.status_code == 200 else None
        except httpx.HTTPError:
            pass
    state = subprocess.run(
        [
            "podman",
            "inspect",
            "--format",
            "{{.State.Status}} restarts={{.RestartCount}} error={{.State.Error}}",
            prod["handle"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert back is not None and back["instance"] == prod["handle"], (state.stdout, state.stderr)
    assert host_pid() not in (pid, "0")  # a new main process of the same container
    report = status(first)
    assert report.running["prod"] and report.supervision["prod"]["restarts"] >= 1 and report.disagreements == []
    assert any("restarted 1 time(s) by its supervisor" in line for line in report.lines())

    # a rolling update whose CLI is killed once the new container serves: the next run finishes it
    second = image_settings(
        make_settings, settings, "buildah", registry, base_image, model=register_iris(settings, other_model(tmp_path))
    )
    for stage in (validate_model, assemble_server, build_image, deploy_to_test_env, smoke):
        stage.run(second)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        MLOPS_TEST_PAUSE_AT="draining",
        MLOPS_DEPLOY__TARGET="container",
        MLOPS_DEPLOY__PROD__PORT=str(second.deploy.prod.port),
        MLOPS_DEPLOY__RUN_AS="1000950000:0",
        MLOPS_BUILD__INSECURE="true",
    )
    cli = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "rolling-update", "--workdir", str(settings.workdir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = ""
    deadline = time.monotonic() + 240
    while "paused before step draining" not in seen and time.monotonic() < deadline:
        line = cli.stderr.readline()
        if not line:
            break
        seen += line
    cli.kill()
    cli.wait(timeout=30)
    cli.stderr.close()
    assert "paused before step draining" in seen, seen
    intent = read_state(settings.workdir)["intents"]["prod"]
    target = ContainerTarget(second)
    assert len(target.observe("prod").servers) == 2  # old and new: the new one already answers
    rolling_update.run(second)  # reconciles first: finishes the interrupted rollout, then releases again
    state = read_state(settings.workdir)
    observed = target.observe("prod")
    assert [s.ident for s in observed.servers] == [state["deployments"]["prod"]["handle"]]
    assert observed.serving == state["deployments"]["prod"]["handle"]
    assert intent["instance"] != prod["handle"] and state["intents"] == {}
    from mlops_cli.status import stop

    stop(second)
    assert port_free("127.0.0.1", second.deploy.prod.port) and target.observe("prod").servers == ()
