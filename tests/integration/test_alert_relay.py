"""`mlops alert-relay` as a real process, forwarding to a Slack webhook double and, through the real
kafka-python client, to a Kafka wire-protocol broker double (tests/kafka_double.py: no real Kafka
broker can run here). Bad input: wrong or missing token (401, nothing forwarded), malformed
payloads (400), sinks down (retried, reported, kept on disk, delivered when back, also across a
restart of the relay), a full queue (503), a message a sink refuses for good (dead letters).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port, require_tool
from kafka_double import KafkaBrokerDouble

pytestmark = pytest.mark.integration
TOKEN = "relay-shared-s3cret"
SLACK_PATH = "/services/T000/B000/webhook-s3cret"
TOPIC = "mlops.alerts.test"


class SlackDouble:
    """Answers as Slack's incoming webhooks do: 200 `ok`, or the status set in `answer` (500, 400 ...)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.answer = (200, "ok")
        self.calls = 0
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                double.calls += 1
                status, text = (404, "no_service") if self.path != SLACK_PATH else double.answer
                if status == 200:
                    double.received.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{SLACK_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack():
    double = SlackDouble()
    yield double
    double.close()


@pytest.fixture
def kafka():
    double = KafkaBrokerDouble().start()
    yield double
    double.stop()


class Relay:
    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env, self.port = tmp, env, int(env["MLOPS_RELAY__PORT"])
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"{'https' if 'MLOPS_RELAY__TLS_CERT_FILE' in self.env else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> Any:
        """The relay's own certificate as the trust anchor when it serves TLS."""
        import ssl

        cert = self.env.get("MLOPS_RELAY__TLS_CERT_FILE")
        return ssl.create_default_context(cafile=cert) if cert else True

    @property
    def log(self) -> str:
        return "".join((self.tmp / f"relay-{i}.log").read_text(errors="replace") for i in range(self.starts))

    def start(self) -> Relay:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
        environ.update(self.env)
        out = open(self.tmp / f"relay-{self.starts}.log", "wb")
        self.starts += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_cli.cli", "alert-relay"],
            cwd=self.tmp,
            env=environ,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"relay exited {self.proc.returncode}: {self.log}"
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(timeout=5)
        return self.proc.returncode if self.proc else 0

    def post(self, body: Any, source: str = "alertmanager", token: str | None = TOKEN, raw: bytes | None = None):
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(f"{self.url}/v1/{source}", content=content, headers=headers, timeout=10, verify=self.verify)

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0

    def queued(self, sink: str) -> list[Path]:
        return sorted((self.tmp / "queue" / sink).glob("*.json"))


@pytest.fixture
def make_relay(tmp_path: Path, slack: SlackDouble, kafka: KafkaBrokerDouble):
    relays: list[Relay] = []

    def make(**extra: str) -> Relay:
        env = {
            "MLOPS_RELAY__TOKEN": TOKEN,
            "MLOPS_RELAY__PORT": str(free_port()),
            "MLOPS_RELAY__INSECURE": "true",
            "MLOPS_RELAY__SINKS": '["slack", "kafka"]',
            "MLOPS_RELAY__QUEUE_DIR": str(tmp_path / "queue"),
            "MLOPS_RELAY__RETRIES": "2",
            "MLOPS_RELAY__RETRY_BACKOFF_S": "0.2",
            "MLOPS_RELAY__MAX_BACKOFF_S": "0.5",
            "MLOPS_RELAY__RUNBOOK_BASE_URL": "https://git.example.org/mlops/blob/main",
            "MLOPS_NOTIFY__SLACK__WEBHOOK_URL": slack.url,
            "MLOPS_NOTIFY__SLACK__TIMEOUT_S": "2",
            "MLOPS_NOTIFY__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
            "MLOPS_NOTIFY__KAFKA__TOPIC": TOPIC,
            "MLOPS_NOTIFY__KAFKA__TIMEOUT_S": "2",
            **extra,
        }
        relay = Relay(tmp_path, env)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.stop()


def alert(name: str = "MlopsFeatureDrift", status: str = "firing", fingerprint: str = "f1", **labels: str) -> dict:
    return {
        "status": status,
        "labels": {
            "alertname": name,
            "severity": "critical",
            "namespace": "ns",
            "job": "iris",
            "feature": "petal_length_cm",
            **labels,
        },
        "annotations": {
            "summary": "iris: feature petal_length_cm drifted (PSI 0.412 > 0.25)",
            "description": "The population stability index of petal_length_cm is above 0.25.",
            "runbook_url": "deploy/monitoring/runbooks.md#mlopsfeaturedrift",
        },
        "startsAt": "2026-11-25T20:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


def alertmanager(*alerts: dict) -> dict:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="MlopsFeatureDrift"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "mlops-relay",
        "groupLabels": {"alertname": "MlopsFeatureDrift"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_alerts_reach_slack_as_block_kit_and_kafka_as_json_events(make_relay, slack, kafka) -> None:
    relay = make_relay().start()
    resolved = alert(status="resolved", fingerprint="f2", feature="sepal_width_cm")
    resolved["endsAt"] = "2026-11-25T21:00:00Z"
    r = relay.post(alertmanager(alert(), resolved))
    assert r.status_code == 202 and r.json() == {"queued": 2, "sinks": ["slack", "kafka"]}
    wait_for(lambda: len(slack.received) == 2 and len(kafka.topic(TOPIC)) == 2, "not delivered")

    first = slack.received[0]
    assert first["text"].startswith(":rotating_light: FIRING MlopsFeatureDrift: iris: feature petal_length_cm")
    assert [b["type"] for b in first["blocks"]] == ["header", "section", "section", "context"]
    facts = " ".join(f["text"] for f in first["blocks"][2]["fields"])
    assert "*job*\niris" in facts and "*feature*\npetal_length_cm" in facts and "*severity*\ncritical" in facts
    assert (
        "<https://git.example.org/mlops/blob/main/deploy/monitoring/runbooks.md#mlopsfeaturedrift|details>"
        in first["blocks"][3]["elements"][0]["text"]
    )
    assert slack.received[1]["text"].startswith(":white_check_mark: RESOLVED MlopsFeatureDrift")

    messages = kafka.topic(TOPIC)
    assert [m.key for m in messages] == [b"f1", b"f2"]
    event = messages[0].json()
    assert event["kind"] == "alert" and event["severity"] == "critical"
    assert event["event"]["source"] == "alertmanager" and event["event"]["labels"]["feature"] == "petal_length_cm"
    assert event["event"]["status"] == "firing" and event["event"]["receiver"] == "mlops-relay"
    assert messages[1].json()["event"]["status"] == "resolved" and messages[1].json()["severity"] == "success"
    assert dict(messages[0].headers) == {"kind": b"alert", "severity": b"critical"}

    wait_for(lambda: relay.metric("mlops_relay_deliveries_total", sink="kafka") == 2, "not counted")
    assert relay.metric("mlops_relay_alerts_received_total", source="alertmanager") == 2
    assert relay.queued("slack") == relay.queued("kafka") == []
    assert TOKEN not in relay.log and SLACK_PATH not in relay.log
    promtool = require_tool("promtool")  # the relay's own metrics are clean exposition too
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=httpx.get(f"{relay.url}/metrics").text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (check.returncode, check.stdout + check.stderr) == (0, "")


def test_grafana_webhooks_are_relayed(make_relay, slack, kafka) -> None:
    relay = make_relay().start()
    grafana = {
        "receiver": "mlops",
        "status": "firing",
        "orgId": 1,
        "version": "1",
        "state": "alerting",
        "title": "[FIRING:1] High latency",
        "message": "…",
        "groupKey": "{}",
        "truncatedAlerts": 0,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://grafana:3000/",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "High latency", "grafana_folder": "mlops"},
                "annotations": {"summary": "p95 over 500ms"},
                "startsAt": "2026-11-25T20:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://grafana:3000/alerting/x",
                "fingerprint": "abc",
                "silenceURL": "http://grafana:3000/s",
                "values": {"A": 0.7},
                "dashboardURL": "http://grafana:3000/d/mlops-service",
                "panelURL": "",
                "valueString": "",
            }
        ],
    }
    assert relay.post(grafana, source="grafana").status_code == 202
    wait_for(lambda: slack.received and kafka.topic(TOPIC), "not delivered")
    assert slack.received[0]["text"] == ":warning: FIRING High latency: p95 over 500ms"
    event = kafka.topic(TOPIC)[0].json()
    assert event["event"]["source"] == "grafana" and event["event"]["values"] == {"A": 0.7}
    assert event["link"] == "http://grafana:3000/d/mlops-service"


def test_wrong_or_missing_token_is_401_and_nothing_is_forwarded(make_relay, slack, kafka) -> None:
    relay = make_relay().start()
    for token in ("wrong", None, TOKEN + "x", TOKEN[:-1]):
        r = relay.post(alertmanager(alert(fingerprint="bad")), token=token)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.post(
        f"{relay.url}/v1/alertmanager",
        json=alertmanager(alert()),
        headers={"Authorization": f"Basic {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 401
    # a good one afterwards is the only one that arrives
    assert relay.post(alertmanager(alert(fingerprint="good"))).status_code == 202
    wait_for(lambda: slack.received and kafka.topic(TOPIC), "not delivered")
    time.sleep(0.5)
    assert len(slack.received) == 1 and [m.key for m in kafka.topic(TOPIC)] == [b"good"]
    assert relay.metric("mlops_relay_requests_total", source="alertmanager", status="401") == 5
    assert TOKEN not in relay.log


MALFORMED = [
    (b"not json", "not JSON"),
    (b"[1, 2]", "body"),
    (b"{}", "status"),
    (json.dumps({"status": "firing", "alerts": []}).encode(), "alerts"),
    (json.dumps({"status": "firing", "alerts": [{"status": "odd", "labels": {"a": "b"}}]}).encode(), "alerts.0.status"),
    (
        json.dumps({"status": "firing", "alerts": [{"status": "firing", "labels": {"a": 1}}]}).encode(),
        "alerts.0.labels.a",
    ),
    (json.dumps({"status": "firing", "alerts": [{"status": "firing", "labels": {}}]}).encode(), "alerts.0.labels"),
    (json.dumps({"status": "firing", "alerts": "x"}).encode(), "alerts"),
    ('{"status": "firing", "alerts": [\udc80]}'.encode("utf-8", "surrogateescape"), "not JSON"),
]


def test_malformed_payloads_are_400_and_nothing_is_queued(make_relay, slack, kafka) -> None:
    relay = make_relay(MLOPS_RELAY__MAX_BODY_BYTES="4096").start()
    for body, where in MALFORMED:
        r = relay.post(None, raw=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "malformed" and where in r.json()["error"]["message"], (body, r.text)
    r = relay.post(alertmanager(*[alert(fingerprint=str(i)) for i in range(40)]))
    assert r.status_code == 413
    assert relay.queued("slack") == relay.queued("kafka") == []
    time.sleep(0.5)
    assert slack.calls == 0 and kafka.topic(TOPIC) == []
    assert "Traceback" not in relay.log


def test_sinks_down_are_retried_reported_queued_on_disk_and_delivered_when_back(make_relay, slack, kafka) -> None:
    slack.answer = (500, "internal_error")
    kafka.stop()
    relay = make_relay().start()
    assert relay.post(alertmanager(alert(fingerprint="a1"))).status_code == 202
    # retried with backoff, then reported down; the alert stays on disk for both sinks
    wait_for(
        lambda: (
            relay.metric("mlops_relay_sink_up", sink="slack") == 0
            and relay.metric("mlops_relay_sink_up", sink="kafka") == 0
        ),
        "sinks not reported down",
        timeout=60,
    )
    assert relay.metric("mlops_relay_delivery_failures_total", sink="slack", retryable="true") >= 3
    assert relay.metric("mlops_relay_delivery_failures_total", sink="kafka", retryable="true") >= 3
    assert "slack is down after 3 attempts: slack webhook answered 500" in relay.log
    assert "kafka is down after 3 attempts" in relay.log
    assert len(relay.queued("slack")) == len(relay.queued("kafka")) == 1
    assert relay.metric("mlops_relay_queue_depth", sink="kafka") == 1
    # the relay stops with alerts queued; they are still on disk
    assert relay.stop() == 0
    assert len(relay.queued("slack")) == len(relay.queued("kafka")) == 1
    # a new relay starts while the sinks are still down and takes a second alert
    relay.start()
    assert relay.post(alertmanager(alert(fingerprint="a2"))).status_code == 202
    wait_for(
        lambda: relay.metric("mlops_relay_delivery_failures_total", sink="kafka", retryable="true") >= 1,
        "no retry after restart",
    )
    # the sinks come back: both alerts arrive, in order, and the queues empty
    slack.answer = (200, "ok")
    kafka.start()
    wait_for(lambda: len(slack.received) == 2 and len(kafka.topic(TOPIC)) == 2, "not delivered when back", timeout=60)
    assert [m.key for m in kafka.topic(TOPIC)] == [b"a1", b"a2"]
    assert [json.loads(json.dumps(s))["text"] for s in slack.received][0].startswith(":rotating_light: FIRING")
    wait_for(lambda: relay.queued("slack") == relay.queued("kafka") == [], "queue not emptied")
    wait_for(lambda: relay.metric("mlops_relay_sink_up", sink="kafka") == 1, "kafka not reported back")
    assert "kafka is back after" in relay.log and "slack is back after" in relay.log


def test_a_full_queue_refuses_with_503_and_loses_nothing(make_relay, slack, kafka) -> None:
    kafka.stop()
    relay = make_relay(MLOPS_RELAY__QUEUE_MAX="2").start()
    assert relay.post(alertmanager(alert(fingerprint="q1"), alert(fingerprint="q2"))).status_code == 202
    r = relay.post(alertmanager(alert(fingerprint="q3")))
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full"
    assert relay.metric("mlops_relay_requests_total", source="alertmanager", status="503") == 1
    kafka.start()
    wait_for(lambda: len(kafka.topic(TOPIC)) == 2, "queued alerts not delivered", timeout=60)
    wait_for(lambda: relay.post(alertmanager(alert(fingerprint="q3"))).status_code == 202, "not accepted again")
    wait_for(lambda: [m.key for m in kafka.topic(TOPIC)] == [b"q1", b"q2", b"q3"], "retried alert not delivered")


def test_a_message_a_sink_refuses_for_good_becomes_a_dead_letter(make_relay, slack, kafka) -> None:
    slack.answer = (400, "invalid_payload")
    relay = make_relay().start()
    assert relay.post(alertmanager(alert(fingerprint="d1"))).status_code == 202
    wait_for(lambda: relay.metric("mlops_relay_dead_letters_total", sink="slack") == 1, "not a dead letter")
    assert slack.calls == 1  # a permanent refusal is not retried
    assert len(list((relay.tmp / "queue" / "slack" / "dead").glob("*.json"))) == 1
    assert "slack refused 'FIRING MlopsFeatureDrift" in relay.log and "invalid_payload" in relay.log
    wait_for(lambda: kafka.topic(TOPIC), "kafka did not get it")


def test_bad_relay_configuration_is_one_line_and_exit_2(tmp_path: Path, slack) -> None:
    from helpers import run_cli

    cases = [
        ({}, "the relay needs a shared token"),
        ({"MLOPS_RELAY__TOKEN": TOKEN}, "the relay has nowhere to send alerts"),
        ({"MLOPS_RELAY__TOKEN": TOKEN, "MLOPS_RELAY__SINKS": '["pager"]'}, "unknown notifier 'pager'"),
        ({"MLOPS_RELAY__TOKEN": TOKEN, "MLOPS_RELAY__SINKS": '["kafka"]'}, "the kafka notifier has no brokers"),
        (
            {
                "MLOPS_RELAY__TOKEN": TOKEN,
                "MLOPS_RELAY__SINKS": '["kafka"]',
                "MLOPS_NOTIFY__KAFKA__BOOTSTRAP_SERVERS": "nohostport",
            },
            "'nohostport' is not host:port",
        ),
        ({"MLOPS_RELAY__TOKEN": TOKEN, "MLOPS_RELAY__SINKS": '["slack"]'}, "the slack notifier has no webhook URL"),
        ({"MLOPS_RELAY__TOKEN_FILE": str(tmp_path / "missing"), "MLOPS_RELAY__SINKS": '["slack"]'}, "relay.token_file"),
    ]
    for env, message in cases:
        run = run_cli("alert-relay", cwd=tmp_path, env={"MLOPS_RELAY__INSECURE": "true", **env}, timeout=60)
        assert run.returncode == 2 and message in run.stderr, (env, run.stderr)
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    busy = free_port()
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen(1)
        run = run_cli(
            "alert-relay",
            "--port",
            str(busy),
            "--sink",
            "slack",
            cwd=tmp_path,
            timeout=60,
            env={
                "MLOPS_RELAY__TOKEN": TOKEN,
                "MLOPS_NOTIFY__SLACK__WEBHOOK_URL": slack.url,
                "MLOPS_RELAY__INSECURE": "true",
            },
        )
    assert run.returncode == 2 and "could not listen" in run.stderr, run.stderr


def test_a_topic_kafka_refuses_is_kafka_down_the_alert_kept_and_slack_still_gets_it(make_relay, slack, kafka) -> None:
    """An authorization error refuses every message: the sink is down (not a dead letter) until the ACL is fixed."""
    kafka.refused.add(TOPIC)
    relay = make_relay().start()
    assert relay.post(alertmanager(alert(fingerprint="k1"))).status_code == 202
    wait_for(lambda: relay.metric("mlops_relay_sink_up", sink="kafka") == 0, "kafka not reported down")
    assert relay.metric("mlops_relay_dead_letters_total", sink="kafka") == 0
    assert relay.metric("mlops_relay_delivery_failures_total", sink="kafka", retryable="true") >= 1
    assert (
        f"kafka is down: it refuses every message (kafka refused topic {TOPIC}: TopicAuthorizationFailedError)"
        in relay.log
    )
    wait_for(lambda: slack.received, "slack did not get it")
    assert kafka.topic(TOPIC) == [] and len(relay.queued("kafka")) == 1
    kafka.refused.discard(TOPIC)  # the ACL is fixed: the kept alert goes out
    wait_for(lambda: [m.key for m in kafka.topic(TOPIC)] == [b"k1"], "not delivered once allowed", timeout=60)
    wait_for(lambda: relay.metric("mlops_relay_sink_up", sink="kafka") == 1, "kafka not reported back")


def test_a_revoked_slack_webhook_is_slack_down_and_the_alert_is_kept(make_relay, slack, kafka) -> None:
    slack.answer = (403, "invalid_token")
    relay = make_relay().start()
    assert relay.post(alertmanager(alert(fingerprint="s1"))).status_code == 202
    wait_for(lambda: relay.metric("mlops_relay_sink_up", sink="slack") == 0, "slack not reported down")
    assert relay.metric("mlops_relay_dead_letters_total", sink="slack") == 0 and len(relay.queued("slack")) == 1
    assert "slack is down: it refuses every message (slack webhook answered 403 invalid_token)" in relay.log
    assert "s3cret" not in relay.log
    slack.answer = (200, "ok")
    wait_for(lambda: len(slack.received) == 1, "not delivered once the webhook works", timeout=60)


def test_dead_letters_are_requeued_by_the_cli_and_delivered(make_relay, slack, kafka) -> None:
    from helpers import run_cli

    slack.answer = (400, "invalid_blocks")
    relay = make_relay().start()
    assert relay.post(alertmanager(alert(fingerprint="r1"))).status_code == 202
    wait_for(lambda: relay.metric("mlops_relay_dead_letters_total", sink="slack") == 1, "not a dead letter")
    slack.answer = (200, "ok")
    env = {k: v for k, v in relay.env.items() if k.startswith("MLOPS_RELAY__")}
    run = run_cli("alert-relay", "--requeue-dead", cwd=relay.tmp, env=env, timeout=60)
    assert run.returncode == 0 and "slack: 1 dead letters requeued, kafka: 0 dead letters requeued" in run.stdout, (
        run.stderr
    )
    wait_for(lambda: len(slack.received) == 1, "requeued dead letter not delivered", timeout=60)


def self_signed(tmp: Path) -> tuple[Path, Path]:
    from helpers import require_tool

    openssl = require_tool("openssl")
    key, cert = tmp / "relay-key.pem", tmp / "relay-cert.pem"
    subprocess.run(
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
        timeout=60,
    )
    return cert, key


def test_the_relay_serves_tls_and_metrics_on_their_own_port_behind_a_token(make_relay, slack, kafka, tmp_path) -> None:
    cert, key = self_signed(tmp_path)
    metrics_port = free_port()
    relay = make_relay(
        MLOPS_RELAY__TLS_CERT_FILE=str(cert),
        MLOPS_RELAY__TLS_KEY_FILE=str(key),
        MLOPS_RELAY__INSECURE="false",
        MLOPS_RELAY__METRICS_PORT=str(metrics_port),
        MLOPS_RELAY__METRICS_TOKEN="metrics-s3cret",
    ).start()
    assert relay.url.startswith("https://")
    assert relay.post(alertmanager(alert(fingerprint="t1"))).status_code == 202
    wait_for(lambda: slack.received and kafka.topic(TOPIC), "not delivered over TLS")
    # plain http to the TLS port gets no answer; an unverified certificate is refused by a verifying client
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            f"http://127.0.0.1:{relay.port}/v1/alertmanager",
            json=alertmanager(alert()),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{relay.url}/health/live", timeout=5)  # the system's trust store does not know this certificate
    # /metrics: only on its port, only with its token
    metrics = f"https://127.0.0.1:{metrics_port}/metrics"
    assert httpx.get(f"{relay.url}/metrics", verify=relay.verify, timeout=5).status_code == 404
    assert httpx.get(metrics, verify=relay.verify, timeout=5).status_code == 401
    assert (
        httpx.get(metrics, verify=relay.verify, timeout=5, headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        == 401
    )
    r = httpx.get(metrics, verify=relay.verify, timeout=5, headers={"Authorization": "Bearer metrics-s3cret"})
    assert r.status_code == 200 and 'mlops_relay_alerts_received_total{source="alertmanager"} 1.0' in r.text
    assert httpx.get(f"https://127.0.0.1:{metrics_port}/health/live", verify=relay.verify, timeout=5).status_code == 200
    r = httpx.post(
        f"https://127.0.0.1:{metrics_port}/v1/alertmanager",
        json=alertmanager(alert()),
        verify=relay.verify,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert r.status_code == 404  # no webhooks on the metrics port
    assert "metrics-s3cret" not in relay.log and TOKEN not in relay.log and "Traceback" not in relay.log


def test_a_token_over_plain_http_is_refused_at_start(tmp_path: Path, slack) -> None:
    from helpers import run_cli

    cert, key = self_signed(tmp_path)
    base = {
        "MLOPS_RELAY__TOKEN": TOKEN,
        "MLOPS_RELAY__SINKS": '["slack"]',
        "MLOPS_NOTIFY__SLACK__WEBHOOK_URL": slack.url,
    }
    cases = [
        (
            {},
            "the relay has no TLS certificate (set relay.tls_cert_file and relay.tls_key_file, or, on this "
            "loopback address only, relay.insecure: true",
        ),
        (
            {"MLOPS_RELAY__HOST": "0.0.0.0", "MLOPS_RELAY__INSECURE": "true"},
            "the relay would take its token over plain http on 0.0.0.0",
        ),
        (
            {"MLOPS_RELAY__INSECURE": "true", "MLOPS_RELAY__METRICS_PORT": "9999", "MLOPS_RELAY__METRICS_HOST": "::"},
            "the relay would take its token over plain http on ::",
        ),
        ({"MLOPS_RELAY__TLS_CERT_FILE": str(cert)}, "relay.tls_cert_file and relay.tls_key_file go together"),
        ({"MLOPS_RELAY__TLS_CERT_FILE": str(cert), "MLOPS_RELAY__TLS_KEY_FILE": str(cert)}, "not usable"),
        (
            {"MLOPS_RELAY__TLS_CERT_FILE": str(tmp_path / "none.pem"), "MLOPS_RELAY__TLS_KEY_FILE": str(key)},
            "No such file or directory",
        ),
        (
            {"MLOPS_RELAY__INSECURE": "true", "MLOPS_RELAY__PORT": "9123", "MLOPS_RELAY__METRICS_PORT": "9123"},
            "relay.metrics_port 9123 is the webhook port",
        ),
    ]
    for env, message in cases:
        run = run_cli("alert-relay", cwd=tmp_path, env={**base, **env}, timeout=60)
        assert run.returncode == 2 and message in run.stderr, (env, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_a_second_relay_on_the_same_queue_directory_is_refused_in_one_line(make_relay, slack, kafka) -> None:
    """Two relays on one queue would number alerts alike and deliver each twice: the second exits 2."""
    from helpers import run_cli

    first = make_relay().start()
    second = run_cli("alert-relay", cwd=first.tmp, timeout=60, env={**first.env, "MLOPS_RELAY__PORT": str(free_port())})
    assert second.returncode == 2, second.stderr
    [line] = second.stderr.strip().splitlines()
    assert f"is in use by another relay (pid {first.proc.pid})" in line and "relay.queue_dir" in line, line
    assert first.post(alertmanager(alert())).status_code == 202  # the first one is untouched
    first.stop()
    assert make_relay().start().post(alertmanager(alert(fingerprint="f2"))).status_code == 202  # free once it stopped


def test_a_disk_that_refuses_the_write_is_503_nothing_queued_and_the_relay_goes_on(tmp_path: Path, slack) -> None:
    """A real write error in a real relay process (RLIMIT_FSIZE: every file it writes is capped at 200 bytes, as a
    full disk would cut it; SIGXFSZ ignored so the write fails with EFBIG instead of killing it): 503, so the
    sender retries; never a 202 for an alert that is not on disk."""
    import resource

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            "MLOPS_RELAY__TOKEN": TOKEN,
            "MLOPS_RELAY__PORT": str(port),
            "MLOPS_RELAY__INSECURE": "true",
            "MLOPS_RELAY__SINKS": '["slack"]',
            "MLOPS_RELAY__QUEUE_DIR": str(tmp_path / "queue"),
            "MLOPS_NOTIFY__SLACK__WEBHOOK_URL": slack.url,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )

    def capped() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (an ignored signal stays ignored across exec)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "alert-relay"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=capped,
    )
    try:

        def live() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(live, "the relay did not start")
        for _ in range(2):
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/alertmanager",
                json=alertmanager(alert()),
                timeout=10,
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unwritable", r.text
        assert not list((tmp_path / "queue").rglob("*.json")) and not list((tmp_path / "queue").rglob(".*.tmp"))
        assert httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
        assert slack.received == []
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert "cannot write the queue" in out.decode() and "Traceback" not in out.decode()
