"""Reconcile before acting on the kubernetes target (issue 10): the real CLI is killed with -9
between the Deployment's write and the end of the wait (test hook MLOPS_TEST_PAUSE_AT=waiting),
and the next run finishes or undoes the rollout from the intent journal, says so in one line,
records it and announces it; `mlops status` flags where state and the cluster disagree.
Against the Kubernetes API server double (tests/doubles/kube_api.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from helpers import read_state, run_cli
from kubetools import digest_ref, set_image, set_smoke_passed

from mlops_cli.stages import deploy_to_test_env, rollback, rolling_update

pytestmark = pytest.mark.integration
PROD = "mlops-prod"


def cli_env(kube) -> dict[str, str]:
    return {
        "MLOPS_DEPLOY__TARGET": "kubernetes",
        "MLOPS_KUBERNETES__SERVER": kube.url,
        "MLOPS_KUBERNETES__TOKEN": kube.token,
        "MLOPS_KUBERNETES__INSECURE": "true",
        "MLOPS_KUBERNETES__POLL_INTERVAL_S": "0.005",
        "MLOPS_KUBERNETES__PROGRESS_DEADLINE_S": "30",
    }


def killed_while_waiting(kube, settings) -> None:
    """`mlops rolling-update` in a child process, paused after the Deployment's write, then kill -9."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    environ.update(cli_env(kube), MLOPS_TEST_PAUSE_AT="waiting")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "rolling-update", "--workdir", str(settings.workdir)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    paused, lines = threading.Event(), []

    def read() -> None:
        with proc.stderr:
            for line in proc.stderr:
                lines.append(line)
                if "paused before step waiting" in line:
                    paused.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert paused.wait(90), "".join(lines)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    intent = read_state(settings.workdir)["intents"]["prod"]
    assert (intent["step"], intent["instance"], intent["record"]["image"]) == (
        "waiting",
        f"{PROD}/iris",
        digest_ref("b"),
    )


def to_prod(settings) -> None:
    deploy_to_test_env.run(settings)
    set_smoke_passed(settings)
    rolling_update.run(settings)


def test_a_killed_rollout_that_became_available_is_finished_by_the_next_run(kube, shipped, capsys):
    to_prod(shipped)
    set_image(shipped, digest_ref("b"))
    deploy_to_test_env.run(shipped)
    set_smoke_passed(shipped)
    killed_while_waiting(kube, shipped)
    # the template is b's; state still names a: status says so, and that a rollout is pending
    done = run_cli("status", "--workdir", str(shipped.workdir), env=cli_env(kube))
    assert done.returncode == 0, done.stderr
    assert "an interrupted rolling-update of revision 2 (step waiting" in done.stdout
    assert f"{PROD}/iris's template runs {digest_ref('b')}, not {digest_ref('a')} as state says" in done.stdout
    capsys.readouterr()

    rolling_update.run(shipped)  # the same image again: reconciled first, then unchanged
    err = capsys.readouterr().err
    assert (
        "reconciled prod: found interrupted rolling-update of revision 2 (at step waiting): finished, revision 2 "
        f"({digest_ref('b')}) rolled out and is available"
    ) in err
    state = read_state(shipped.workdir)
    assert state["intents"] == {}
    assert (state["deployments"]["prod"]["image"], state["deployments"]["prod"]["revision"]) == (digest_ref("b"), 2)
    assert state["previous_deployments"]["prod"]["image"] == digest_ref("a")
    assert kube.running_images(PROD, "iris") == [digest_ref("b")] * 2
    done = run_cli("status", "--workdir", str(shipped.workdir), env=cli_env(kube))
    assert "DISAGREES" not in done.stdout, done.stdout


def test_a_killed_rollout_that_never_became_available_is_undone_recorded_and_announced(
    kube, shipped, capsys, kube_settings, slack
):
    to_prod(shipped)
    set_image(shipped, digest_ref("b"))
    deploy_to_test_env.run(shipped)
    set_smoke_passed(shipped)
    kube.image_modes["sha256:" + "b" * 8] = "pull-error"  # b never becomes available in prod
    killed_while_waiting(kube, shipped)
    capsys.readouterr()

    set_image(shipped, digest_ref("a"))  # the operator goes on with the image that served
    deploy_to_test_env.run(shipped)
    set_smoke_passed(shipped)
    notifying = kube_settings(model=shipped.model, notify={"notifiers": ["slack"], "slack": {"webhook_url": slack.url}})
    rolling_update.run(notifying)
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "reconciled prod:" in x)
    assert "found interrupted rolling-update of revision 2 (at step waiting): undone" in line
    assert f"revision 1 ({digest_ref('a')}) serves again as revision 3" in line
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2
    state = read_state(shipped.workdir)
    assert state["intents"] == {} and state["deployments"]["prod"]["image"] == digest_ref("a")
    # the repair was announced (and recorded) before the new run's own rollout
    texts = [p["text"] for p in slack.posts]
    assert len(texts) == 2 and texts[1] == ":white_check_mark: rolling-update of iris@1 to prod succeeded", texts
    assert "rolled back" in texts[0] and "prod" in texts[0], texts


def test_rollback_reconciles_before_working_out_the_previous_revision(kube, shipped, capsys):
    to_prod(shipped)
    set_image(shipped, digest_ref("b"))
    deploy_to_test_env.run(shipped)
    set_smoke_passed(shipped)
    killed_while_waiting(kube, shipped)
    capsys.readouterr()

    result = rollback.run(shipped, "prod")
    assert "reconciled prod: found interrupted rolling-update of revision 2" in capsys.readouterr().err
    # the interrupted rollout of b was finished first, so "previous" is a and the rollback is from b
    assert (result.previous_revision, result.image) == (2, digest_ref("a"))
    state = read_state(shipped.workdir)
    assert state["intents"] == {}
    assert (state["rollouts"]["prod"]["previous_image"], state["rollouts"]["prod"]["image"]) == (
        digest_ref("b"),
        digest_ref("a"),
    )
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2
