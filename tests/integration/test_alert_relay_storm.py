"""An alert storm against a real `mlops alert-relay` process whose sinks are down (real dead ports):
intake stays fast however long the queue grows, and after `kill -9` and a restart every alert that
was acknowledged (202) is delivered, once, when the sinks are back."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from helpers import free_port
from kafka_double import KafkaBrokerDouble

pytestmark = pytest.mark.integration
TOKEN = "storm-token-s3cret"
TOPIC = "mlops.storm"
STORM = 2000
SENDERS = 8


class SlackDouble:
    """Slack's incoming webhook: 200 `ok`; keeps the fingerprint of each message (its text names it)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.texts.append(body["text"])
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/storm"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook(i: int) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": f"Storm{i}", "severity": "warning", "job": "iris"},
        "annotations": {"summary": f"storm alert {i}"},
        "startsAt": "2026-11-30T18:00:00Z",
        "fingerprint": f"fp{i}",
    }
    return json.dumps(
        {"version": "4", "status": "firing", "receiver": "mlops-relay", "groupKey": f"{{}}:{i}", "alerts": [alert]}
    ).encode()


def failures(port: int, sink: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mlops_relay_delivery_failures_total" and s.labels.get("sink") == sink
    )


def start_relay(tmp: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    environ.update(env)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_cli.cli", "alert-relay"],
            cwd=tmp,
            env=environ,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{env['MLOPS_RELAY__PORT']}/health/live", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_a_storm_with_dead_sinks_is_taken_fast_and_nothing_acknowledged_is_lost_after_kill_9(tmp_path: Path):
    kafka = KafkaBrokerDouble().start()
    kafka.stop()  # its port is now a real dead port; the double comes back on it later
    slack = SlackDouble()
    port = free_port()
    env = {
        "MLOPS_RELAY__TOKEN": TOKEN,
        "MLOPS_RELAY__PORT": str(port),
        "MLOPS_RELAY__INSECURE": "true",
        "MLOPS_RELAY__SINKS": '["slack", "kafka"]',
        "MLOPS_RELAY__QUEUE_DIR": str(tmp_path / "queue"),
        "MLOPS_RELAY__RETRY_BACKOFF_S": "0.2",
        "MLOPS_RELAY__MAX_BACKOFF_S": "1",
        "MLOPS_NOTIFY__SLACK__TIMEOUT_S": "2",
        "MLOPS_NOTIFY__SLACK__WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/services/T0/B0/storm",  # nobody there
        "MLOPS_NOTIFY__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MLOPS_NOTIFY__KAFKA__TOPIC": TOPIC,
        "MLOPS_NOTIFY__KAFKA__TIMEOUT_S": "2",
    }
    log = tmp_path / "relay.log"
    relay = start_relay(tmp_path, env, log)
    # the sinks are down before the storm comes: one alert first, until both sinks have failed with it (this
    # also builds the kafka client, which is not part of any intake)
    first = httpx.post(
        f"http://127.0.0.1:{port}/v1/alertmanager",
        content=webhook(-1),
        timeout=10,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert first.status_code == 202
    deadline = time.monotonic() + 30
    while failures(port, "slack") < 1 or failures(port, "kafka") < 1:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    acked: set[int] = {-1}
    latencies: list[float] = []
    errors: list[str] = []
    killed = threading.Event()
    counter = iter(range(10**6))
    lock = threading.Lock()

    def sender() -> None:
        # the standard library's keep-alive client: light on CPU, so the senders do not starve the relay
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connected = False
        try:
            while True:
                with lock:
                    i = next(counter)
                if (i >= STORM and killed.is_set()) or i >= STORM * 2:
                    return
                began = time.perf_counter()
                try:
                    client.request("POST", "/v1/alertmanager", body=webhook(i), headers=headers)
                    r = client.getresponse()
                    body = r.read()
                except (OSError, http.client.HTTPException) as exc:  # only once the relay is killed
                    if not killed.is_set():
                        errors.append(f"{i}: {type(exc).__name__}")
                    return
                if i < STORM and connected:  # a connection's first request also pays the TCP handshake: not intake
                    latencies.append(time.perf_counter() - began)
                connected = True
                if r.status == 202:
                    with lock:
                        acked.add(i)
                elif not killed.is_set():
                    errors.append(f"{i}: {r.status} {body[:200]!r}")
        finally:
            client.close()

    try:
        threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
        began = time.monotonic()
        for t in threads:
            t.start()
        # the storm; then, while the senders go on posting, kill -9 in the middle of the intake
        while len(latencies) < STORM - SENDERS and time.monotonic() - began < 120 and not errors:
            time.sleep(0.05)
        time.sleep(0.2)
        killed.set()
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=10)
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors[:5]
        assert len(latencies) >= STORM - SENDERS and set(range(STORM)) <= acked
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
        print(
            f"intake of {STORM} webhooks ({len(latencies)} timed: not each connection's first), {SENDERS} senders, "
            f"sinks down: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
            f"{len(acked)} acknowledged before kill -9"
        )

        # the sinks come back and the relay restarts: every acknowledged alert arrives, once, in each sink
        kafka.start()
        env["MLOPS_NOTIFY__SLACK__WEBHOOK_URL"] = slack.url
        relay = start_relay(tmp_path, env, log)
        queued: list[Path] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            queued = [p for sink in ("slack", "kafka") for p in (tmp_path / "queue" / sink).glob("*.json")]
            if not queued and len(slack.texts) >= len(acked) and len(kafka.topic(TOPIC)) >= len(acked):
                break
            time.sleep(0.5)
        assert not queued, f"{len(queued)} alerts still queued after 240 s"
        # writes cut short by the kill (never acknowledged) were removed by the restart
        assert not list((tmp_path / "queue" / "incoming").iterdir())
        assert not [p for sink in ("slack", "kafka") for p in (tmp_path / "queue" / sink).glob(".*")]
        slack_seen = [int(t.split("storm alert ")[1]) for t in slack.texts]
        kafka_seen = [int(m.key.decode()[2:]) for m in kafka.topic(TOPIC)]
        for seen in (slack_seen, kafka_seen):
            assert acked <= set(seen), f"lost: {sorted(acked - set(seen))[:10]} ({len(acked - set(seen))})"
            assert len(seen) == len(set(seen)), "delivered twice"
        assert "Traceback" not in log.read_text() and TOKEN not in log.read_text()
        assert p99 < 0.100, f"intake p99 {p99 * 1000:.1f} ms (p50 {p50 * 1000:.1f} ms)"
    finally:
        if relay.poll() is None:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=20)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait(timeout=5)
        kafka.stop()
        slack.close()
