"""The relay's parts without servers: webhook bodies, notifications, the on-disk queue, settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError
from mlops_cli.notifiers import Notification
from mlops_cli.relay.payloads import MalformedPayload, notifications, parse
from mlops_cli.relay.queue import DiskQueue, QueueFull


def hook(**alert_overrides) -> dict:
    alert = {
        "status": "firing",
        "labels": {"alertname": "MlopsHighErrorRatio", "severity": "critical", "job": "iris", "namespace": "ns"},
        "annotations": {
            "summary": "iris: 10% of predictions fail with 5xx",
            "description": "More than 5%.",
            "runbook_url": "deploy/monitoring/runbooks.md#mlopshigherrorratio",
        },
        "startsAt": "2026-11-25T20:00:00Z",
        "fingerprint": "fp1",
        "generatorURL": "http://prom/graph",
    }
    alert.update(alert_overrides)
    return {"version": "4", "status": "firing", "receiver": "r", "groupKey": "g", "alerts": [alert]}


def test_an_alertmanager_alert_becomes_a_readable_notification() -> None:
    [note] = notifications(parse(hook()), "alertmanager", "https://git.example.org/mlops/blob/main/")
    assert note.title == "FIRING MlopsHighErrorRatio: iris: 10% of predictions fail with 5xx"
    assert note.severity == "critical" and note.kind == "alert" and note.text == "More than 5%."
    assert dict(note.fields) == {
        "namespace": "ns",
        "job": "iris",
        "severity": "critical",
        "since": "2026-11-25T20:00:00Z",
    }
    assert note.link == "https://git.example.org/mlops/blob/main/deploy/monitoring/runbooks.md#mlopshigherrorratio"
    assert note.event["fingerprint"] == "fp1" and note.event["source"] == "alertmanager"
    assert json.loads(json.dumps(note.as_event()))["event"]["labels"]["job"] == "iris"


def test_links_severity_and_resolution() -> None:
    [note] = notifications(parse(hook()), "alertmanager")  # relative runbook, no base: the generator URL
    assert note.link == "http://prom/graph"
    [note] = notifications(parse(hook(status="resolved", endsAt="2026-11-25T21:00:00Z")), "alertmanager")
    assert note.title.startswith("RESOLVED ") and note.severity == "success" and note.fields["resolved at"]
    [note] = notifications(parse(hook(labels={"alertname": "X"})), "grafana")
    assert note.severity == "warning" and note.title == "FIRING X: iris: 10% of predictions fail with 5xx"


@pytest.mark.parametrize(
    "body, where",
    [
        ([], "body"),
        ({"status": "firing"}, "alerts"),
        ({"status": "firing", "alerts": []}, "alerts"),
        ({"status": "weird", "alerts": [{"status": "firing", "labels": {"a": "b"}}]}, "status"),
        ({"status": "firing", "alerts": [{"status": "firing", "labels": {"a": ["b"]}}]}, "alerts.0.labels.a"),
        (
            {"status": "firing", "alerts": [{"status": "firing", "labels": {"a": "b"}, "annotations": {"x": 1}}]},
            "alerts.0.annotations.x",
        ),
    ],
)
def test_malformed_bodies_say_where(body, where) -> None:
    with pytest.raises(MalformedPayload) as exc:
        parse(body)
    assert str(exc.value).startswith(where) and "\n" not in str(exc.value)


def note(title: str) -> Notification:
    return Notification(title=title, kind="alert", event={"fingerprint": title})


def test_the_queue_is_fifo_bounded_all_or_nothing_and_survives_a_restart(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, ["slack", "kafka"], max_items=3)
    q.put([note("a"), note("b")])
    with pytest.raises(QueueFull):
        q.put([note("c"), note("d")])  # would overflow: neither is queued, for no sink
    assert q.depth("slack") == q.depth("kafka") == 2
    (tmp_path / "slack" / ".half-written.json.tmp").write_text("{")
    q = DiskQueue(tmp_path, ["slack", "kafka"], max_items=3)  # a restart
    assert not list((tmp_path / "slack").glob(".*.tmp"))
    first = q.oldest("slack")
    assert first.note.title == "a" and first.note.event == {"fingerprint": "a"} and first.note.kind == "alert"
    q.done(first)
    second = q.oldest("slack")
    q.bury(second)
    assert q.oldest("slack") is None and q.dead("slack") == 1 and q.depth("kafka") == 2
    (tmp_path / "kafka" / "00000000000000000000-0-000000.json").write_text("not json")
    assert q.rescan("kafka") == 1  # a file that appeared on disk is queued from the next rescan on
    assert q.oldest("kafka").note.title == "a" and q.dead("kafka") == 1  # unreadable: set aside, not lost


def test_kafka_and_relay_settings() -> None:
    s = load_settings(None, {"notify": {"kafka": {"bootstrap_servers": "k1:9092, k2:9093"}}}, environ={})
    assert s.notify.kafka.bootstrap_servers == ["k1:9092", "k2:9093"] and s.notify.kafka.topic == "mlops.alerts"
    for bad, message in (
        ({"bootstrap_servers": ["k1"]}, "is not host:port"),
        ({"topic": "a b"}, "topic"),
        ({"security_protocol": "TLS"}, "security_protocol"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(None, {"notify": {"kafka": bad}}, environ={})
    env = {"MLOPS_RELAY__TOKEN": "t0k", "MLOPS_NOTIFY__KAFKA__SASL_PASSWORD": "pw"}
    s = load_settings(None, {}, environ=env)
    assert s.relay.token_value() == "t0k" and "t0k" not in repr(s) and "pw" not in repr(s)


def test_the_cli_imports_no_relay_server_or_kafka_client() -> None:
    code = (
        "import sys, mlops_cli.cli; heavy = ['kafka', 'uvicorn', 'starlette', 'prometheus_client', 'slack_sdk']; "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_monitor_psi_levels_must_be_in_order() -> None:
    for warning, critical in ((0.3, 0.25), (0.25, 0.25)):
        with pytest.raises(ConfigError, match="psi_warning .* must be below psi_critical"):
            load_settings(None, {"monitor": {"psi_warning": warning, "psi_critical": critical}}, environ={})
    assert (
        load_settings(None, {"monitor": {"psi_warning": 0.2, "psi_critical": 0.3}}, environ={}).monitor.psi_warning
        == 0.2
    )


def test_packages_the_relay_imports_are_installed_with_mlops() -> None:
    import configparser

    from helpers import REPO

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    required = {
        line.split(">")[0].split("=")[0].split(";")[0].strip().lower()
        for line in cfg["options"]["install_requires"].splitlines()
        if line.strip() and not line.startswith("#")
    }
    for package in ("starlette", "uvicorn", "prometheus-client"):
        assert package in required, package
    # its slack sink is the slack notifier: slack_sdk comes with the 'slack' extra (a one-line error names it)
    assert "slack_sdk>=3.20" in cfg["options.extras_require"]["slack"].split()
