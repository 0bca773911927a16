"""Load: `mlops chatops` as its own process takes 50 signed /mlops deploy commands per second for
10 seconds; every one is answered within Slack's 3 seconds, and each leads to exactly one Jenkins
build and one thread (none lost, none doubled). Jenkins and Slack are the doubles (nothing heavy
runs); bounded in count (500) and time."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from doubles.jenkins_api import JenkinsApiDouble
from doubles.slack_web import SlackSender, SlackWebDouble
from helpers import free_port

pytestmark = pytest.mark.integration
SECRET = "load-test-signing-secret-5c1f"
RATE, SECONDS, ACK_BUDGET_S = 50, 10, 3.0


def test_fifty_commands_a_second_for_ten_seconds_all_acked_in_time_none_lost_none_doubled(tmp_path):
    slack = SlackWebDouble(channels=("C_RELEASES",))
    slack.start()
    jenkins = JenkinsApiDouble(start_after=0)
    jenkins.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            "MLOPS_WORKDIR": str(tmp_path / "work"),
            "MLOPS_CHATOPS__PORT": str(port),
            "MLOPS_CHATOPS__SIGNING_SECRET": SECRET,
            "MLOPS_CHATOPS__BOT_TOKEN": slack.token,
            "MLOPS_CHATOPS__SLACK_API_URL": slack.api_url,
            "MLOPS_CHATOPS__RESPONSE_URL_PREFIX": slack.url + "/response/",
            "MLOPS_CHATOPS__USERS": json.dumps({"U_DEP": ["deployer"]}),
            "MLOPS_CHATOPS__JENKINS__URL": jenkins.url,
            "MLOPS_CHATOPS__JENKINS__USER": jenkins.user,
            "MLOPS_CHATOPS__JENKINS__API_TOKEN": jenkins.token,
            "MLOPS_CHATOPS__JENKINS__POLL_S": "0.05",
        }
    )
    log = open(tmp_path / "chatops.log", "w")  # a file, not a pipe: nobody reads a pipe while the load runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "chatops"], env=env, stdout=log, stderr=log, text=True
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
        total = RATE * SECONDS

        async def send_all() -> list[tuple[int, float, str]]:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
            async with httpx.AsyncClient(timeout=10, limits=limits) as client:
                start = time.monotonic()

                async def one(i: int) -> tuple[int, float, str]:
                    await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
                    body = sender.command(
                        f"deploy local:iris@{i}", "U_DEP", slack.response_url(), trigger_id=f"{i}.load"
                    )
                    sent = time.monotonic()
                    answer = await client.post(
                        url + "/slack/commands", content=body.encode(), headers=sender.sign(body)
                    )
                    return answer.status_code, time.monotonic() - sent, answer.text

                return await asyncio.gather(*(one(i) for i in range(total)))

        results = asyncio.run(send_all())
        statuses = collections.Counter(status for status, _, _ in results)
        slowest = max(took for _, took, _ in results)
        assert statuses == {200: total}, statuses
        assert slowest < ACK_BUDGET_S, f"slowest ack {slowest:.2f}s"
        assert all("deploying `local:iris@" in text for _, _, text in results)

        def all_threads_answered() -> bool:
            roots = slack.roots()
            return len(roots) >= total and all(slack.thread(r["ts"]) for r in roots)

        slack.wait(all_threads_answered, timeout=240)
        time.sleep(1)  # anything doubled would show now
        builds = jenkins.all_builds()
        models = collections.Counter(b.parameters["MODEL_REF"] for b in builds)
        assert len(builds) == total and set(models.values()) == {1}
        assert models.keys() == {f"local:iris@{i}" for i in range(total)}
        roots = slack.roots()
        assert len(roots) == total
        assert {b.parameters["SLACK_THREAD_TS"] for b in builds} == {r["ts"] for r in roots}
        assert all(len(slack.thread(r["ts"])) == 1 for r in roots)
        print(
            f"\n{total} commands at {RATE}/s: slowest ack {slowest * 1000:.0f} ms, "
            f"median {sorted(t for _, t, _ in results)[total // 2] * 1000:.0f} ms"
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
        jenkins.stop()
