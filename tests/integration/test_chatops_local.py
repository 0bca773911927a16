"""End to end on one machine, no Jenkins: `mlops chatops --executor local` as its own process; a signed
`/mlops deploy local:iris-demo` runs the seven stages (each its own `mlops` process) and leaves the
model serving; the release thread (Slack Web API double) receives each stage's outcome and ends
with what serves and its digest; before production the release waits for an Approve/Reject click in the
thread by another approver."""

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


APPROVAL_TIMEOUT_S = 25  # the gate's bound here: the clicks come at once; the third release times out


def test_a_signed_deploy_runs_the_pipeline_locally_and_prod_waits_for_another_approver_in_the_thread(
    tmp_path, iris_artifact
):
    """Three releases to prod through one service: rejected (after the requester's own Approve is refused),
    approved by another approver (prod serves; state says who asked, who approved, which digest), and
    one nobody answers (timed out): the rejected and timed-out ones deploy nothing."""
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
            "MLOPS_CHATOPS__USERS": json.dumps({"U_DEP": ["deployer", "approver"], "U_APP": ["approver"]}),
            "MLOPS_CHATOPS__LOCAL__APPROVAL_TIMEOUT_S": str(APPROVAL_TIMEOUT_S),
            "MLOPS_APPROVAL__REQUIRED": "true",  # rolling-update refuses without --approved-by: the gate gives it
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
    sender = SlackSender(SECRET)

    def release() -> tuple[str, dict]:
        """/mlops deploy by U_DEP: the thread's ts and its approval message, once the six stages passed."""
        before = len(slack.roots())
        body = sender.command("deploy local:iris-demo", "U_DEP", slack.response_url())
        answer = httpx.post(url + "/slack/commands", content=body.encode(), headers=sender.sign(body), timeout=10)
        assert answer.status_code == 200 and "deploying `local:iris-demo` to prod" in answer.json()["text"]
        root = slack.wait(lambda: slack.roots()[before:], timeout=30)[0]

        def gate() -> list[dict]:
            with slack.lock:
                return [m for m in slack.messages if m["thread_ts"] == root["ts"] and m["blocks"]]

        message = slack.wait(gate, timeout=300)[0]
        lines = slack.thread(root["ts"])
        assert len(lines) == 7, "\n".join(lines)
        for index, (stage, line) in enumerate(zip(STAGES[:6], lines), start=1):
            expected = "skipped" if stage in ("unit-test", "build-image") else "passed"  # no project tests, no builder
            assert f"[{index}/{len(STAGES)}] {stage} {expected} (" in line, line
        return root["ts"], message

    def click(message: dict, action: str, user: str) -> str:
        response_url = slack.response_url()
        value = next(b for b in message["blocks"] if b.get("block_id") == "mlops_approval")["elements"][0]["value"]
        body = sender.click(action, value, user, response_url, message)
        answer = httpx.post(url + "/slack/interactions", content=body.encode(), headers=sender.sign(body), timeout=10)
        assert answer.status_code == 200
        return response_url

    def ended(ts: str) -> list[str]:
        def finished() -> list[str]:
            lines = slack.thread(ts)
            return lines if lines and lines[-1].startswith((":tada:", ":x:", ":warning:")) else []

        return slack.wait(finished, timeout=120)

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

        # 1: the pipeline's Block Kit names model, digest and requester; four eyes; Reject -> nothing deployed
        ts, message = release()
        from mlops_cli.chatops.blocks import APPROVAL_BLOCK

        actions = next(b for b in message["blocks"] if b.get("block_id") == APPROVAL_BLOCK)
        assert [e["action_id"] for e in actions["elements"]] == ["mlops_approve", "mlops_reject"]
        value = json.loads(actions["elements"][0]["value"])
        assert value["job"] == "local" and value["requested_by"] == "slack:U_DEP"
        assert value["model"] == "local:iris-demo@1" and value["digest"].startswith("bundle sha256:")
        assert "local:iris-demo@1" in message["text"] and value["digest"] in message["text"]
        assert "<@U_DEP>" in message["text"]
        own = click(message, "mlops_approve", "U_DEP")
        assert "four eyes" in slack.wait(lambda: slack.answers(own))[0]["text"]
        click(message, "mlops_reject", "U_APP")
        lines = ended(ts)
        assert lines[-1] == ":x: rejected by <@U_APP>: nothing was deployed to prod", "\n".join(lines)
        state = read_state(work)
        assert "prod" not in state["deployments"]
        assert state["approvals"][-1]["decision"] == "rejected" and state["approvals"][-1]["by"] == "slack:U_APP"
        assert state["approvals"][-1]["triggered_by"] == "slack:U_DEP"
        again = click(message, "mlops_approve", "U_APP")  # the finished release's button answers nothing
        assert "local release #1 is not waiting for approval" in slack.wait(lambda: slack.answers(again))[0]["text"]
        assert "prod" not in read_state(work)["deployments"]

        # 2: approved by another approver -> prod serves, and the record says who asked, who approved, what
        ts, message = release()
        digest = json.loads(message["blocks"][-1]["elements"][0]["value"])["digest"]
        click(message, "mlops_approve", "U_APP")
        lines = ended(ts)
        assert lines[-1].startswith(":tada:"), "\n".join(lines)
        assert lines[-3] == ":white_check_mark: approved by <@U_APP>: rolling-update runs"
        assert f"[{len(STAGES)}/{len(STAGES)}] rolling-update passed (" in lines[-2]
        state = read_state(work)
        prod = state["deployments"]["prod"]
        assert f"`{prod['model_ref']}`" in lines[-1] and prod["model_ref"] == "local:iris-demo@1"
        assert digest == f"bundle sha256:{prod['bundle_digest']}" and digest in lines[-1] and prod["url"] in lines[-1]
        record = state["audit"][-1]  # rolling-update's
        assert (record["env"], record["approved_by"], record["triggered_by"]) == ("prod", "slack:U_APP", "slack:U_DEP")
        assert record["digest"] == digest
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

        # 3: nobody answers -> timed out, prod unchanged; the button then names no waiting release
        ts, message = release()
        lines = ended(ts)
        assert lines[-1] == f":x: no decision within {APPROVAL_TIMEOUT_S}s: nothing was deployed to prod", lines[-1]
        state = read_state(work)
        assert state["deployments"]["prod"]["revision"] == prod["revision"]
        assert [a for a in state["audit"] if a["env"] == "prod"][-1] == record  # no prod deployment since
        assert state["approvals"][-1]["decision"] == "timed-out" and state["approvals"][-1]["by"] is None
        late = click(message, "mlops_approve", "U_APP")
        assert "is not waiting for approval" in slack.wait(lambda: slack.answers(late))[0]["text"]
        audit = [json.loads(line) for line in (work / "chatops-audit.jsonl").read_text().splitlines()]
        events = [(e["event"], e.get("reason", "")) for e in audit]
        assert ("rejected", "") in events and ("approved", "") in events
        assert any(e == "failed" and "no decision within" in r for e, r in events)

        # 4: the service stops while a release waits: it ends at once and deploys nothing
        ts, message = release()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / "chatops.log").read_text()
        assert read_state(work)["deployments"]["prod"]["revision"] == prod["revision"]
        assert (
            slack.thread(ts)[-1] == ":x: the service stopped while waiting for approval: nothing was deployed to prod"
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
