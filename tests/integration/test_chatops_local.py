"""End to end on one machine, no Jenkins: `mlops chatops --executor local` as its own process; a signed
`/mlops deploy local:iris-demo` runs the seven stages (each its own `mlops` process) and leaves the
model serving; the release thread (Slack Web API double) receives each stage's outcome and ends
with what serves and its digest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from doubles.slack_web import SlackSender, SlackWebDouble
from helpers import free_port, read_state, register_iris, run_cli

from mlops_cli.stages import STAGES

pytestmark = pytest.mark.integration
SECRET = "local-e2e-signing-secret-77ab"


def test_a_signed_deploy_runs_the_pipeline_locally_and_the_thread_hears_every_stage(tmp_path, iris_artifact):
    from mlops_cli.config import load_settings

    work = tmp_path / "work"
    register_iris(load_settings(None, {"workdir": work}, environ={}), iris_artifact, name="iris-demo")
    slack = SlackWebDouble(channels=("C_RELEASES",))
    slack.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            "MLOPS_WORKDIR": str(work),
            "MLOPS_DEPLOY__TEST__PORT": str(free_port()),
            "MLOPS_DEPLOY__PROD__PORT": str(free_port()),
            "MLOPS_CHATOPS__PORT": str(port),
            "MLOPS_CHATOPS__SIGNING_SECRET": SECRET,
            "MLOPS_CHATOPS__BOT_TOKEN": slack.token,
            "MLOPS_CHATOPS__SLACK_API_URL": slack.api_url,
            "MLOPS_CHATOPS__RESPONSE_URL_PREFIX": slack.url + "/response/",
            "MLOPS_CHATOPS__USERS": json.dumps({"U_DEP": ["deployer"]}),
            "MLOPS_VALIDATION__THRESHOLDS": json.dumps({"accuracy": ">= 0.9"}),
        }
    )  # validate-model needs one
    log = open(tmp_path / "chatops.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "chatops", "--executor", "local"],
        env=env,
        stdout=log,
        stderr=log,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "chatops.log").read_text()
            try:
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "chatops did not become ready"
            time.sleep(0.1)
        sender = SlackSender(SECRET)
        body = sender.command("deploy local:iris-demo", "U_DEP", slack.response_url())
        answer = httpx.post(url + "/slack/commands", content=body.encode(), headers=sender.sign(body), timeout=10)
        assert answer.status_code == 200 and "deploying `local:iris-demo` to prod" in answer.json()["text"]
        root = slack.wait(lambda: slack.roots(), timeout=30)[0]

        def finished() -> list[str]:
            lines = slack.thread(root["ts"])
            return lines if lines and lines[-1].startswith((":tada:", ":x:", ":warning:")) else []

        lines = slack.wait(finished, timeout=480)
        assert lines[-1].startswith(":tada:"), "\n".join(lines)
        assert len(lines) == len(STAGES) + 1
        for index, (stage, line) in enumerate(zip(STAGES, lines), start=1):
            expected = "skipped" if stage in ("unit-test", "build-image") else "passed"  # no project tests, no builder
            assert f"[{index}/{len(STAGES)}] {stage} {expected} (" in line, line
        state = read_state(work)
        prod = state["deployments"]["prod"]
        assert f"`{prod['model_ref']}`" in lines[-1] and prod["model_ref"] == "local:iris-demo@1"
        assert f"bundle sha256:{prod['bundle_digest']}" in lines[-1] and prod["url"] in lines[-1]
        served = httpx.post(prod["url"] + "/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10)
        assert served.json()["predictions"][0]["label"] == "setosa"
        environ = Path(f"/proc/{prod['pid']}/environ").read_bytes()
        assert SECRET.encode() not in environ and slack.token.encode() not in environ  # chatops' secrets stay its own
        # status tells what serves, and who asked for it
        status_url = slack.response_url()
        body = sender.command("status prod", "U_DEP", status_url)
        httpx.post(url + "/slack/commands", content=body.encode(), headers=sender.sign(body), timeout=10)
        status = slack.wait(lambda: slack.answers(status_url))[0]["text"]
        assert (
            status.startswith("*prod*: `local:iris-demo@1` (iris-demo version 1)") and "requested by <@U_DEP>" in status
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        slack.stop()
        run_cli("stop", env={"MLOPS_WORKDIR": str(work)})


def test_chatops_serves_https_with_its_own_certificate(tmp_path):
    import subprocess as sp

    from helpers import require_tool

    openssl = require_tool("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    sp.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    import ssl

    trust = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            "MLOPS_WORKDIR": str(tmp_path / "work"),
            "MLOPS_CHATOPS__PORT": str(port),
            "MLOPS_CHATOPS__SIGNING_SECRET": SECRET,
            "MLOPS_CHATOPS__BOT_TOKEN": "xoxb-unused",
            "MLOPS_CHATOPS__USERS": json.dumps({"U_VIEW": ["viewer"]}),
            "MLOPS_CHATOPS__TLS_CERT_FILE": str(cert),
            "MLOPS_CHATOPS__TLS_KEY_FILE": str(key),
        }
    )
    log = open(tmp_path / "chatops.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "chatops", "--executor", "local"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "chatops.log").read_text()
            try:
                if httpx.get(f"https://127.0.0.1:{port}/health/live", verify=trust, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "chatops did not serve HTTPS"
            time.sleep(0.1)
        sender = SlackSender(SECRET)
        body = sender.command("help", "U_VIEW", "https://hooks.slack.com/commands/T/1/x")
        answer = httpx.post(
            f"https://127.0.0.1:{port}/slack/commands",
            content=body.encode(),
            headers=sender.sign(body),
            verify=trust,
            timeout=10,
        )
        assert "deploy MODEL_REF" in answer.json()["text"]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)  # no plain HTTP beside it
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "chatops.log").read_text()
    assert SECRET not in (tmp_path / "chatops.log").read_text()
