"""The relay's app in process (Starlette's TestClient runs its lifespan and workers): workers that
survive the disk and restart when they end, sinks that refuse everything (down, kept queued) against
messages refused for good (dead letters, bounded, requeued), oversized and deeply nested bodies, a
queue that cannot be written, and the queue's own guarantees (the bound under threads, all-or-nothing
writes, a persisted counter, unreadable items counted)."""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

with warnings.catch_warnings():  # this starlette prefers the `httpx2` package for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from mlops_cli.notifiers import DeliveryError, Notification
from mlops_cli.relay import app as relay_app
from mlops_cli.relay.app import RelayConfig, create_app
from mlops_cli.relay.queue import DiskQueue

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def hook(n: int = 1) -> dict:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "r",
        "groupKey": "g",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": f"A{i}", "severity": "critical"},
                "annotations": {"summary": f"alert {i}"},
                "fingerprint": f"fp{i}",
            }
            for i in range(n)
        ],
    }


class Sink:
    """A notifier whose answer the test sets: None delivers, an exception is raised."""

    name = "sink"

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.error: BaseException | None = None

    def send(self, note: Notification) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(note)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return value


def make(tmp_path: Path, sink: Sink, **config: Any) -> tuple[TestClient, DiskQueue, CollectorRegistry]:
    queue = DiskQueue(tmp_path / "q", ["sink"], config.pop("queue_max", 100), dead_max=config.pop("dead_max", 1000))
    registry = CollectorRegistry()
    config = {"retries": 1, **config}
    cfg = RelayConfig(token=TOKEN, retry_backoff_s=0.01, max_backoff_s=0.05, **config)
    return TestClient(create_app(cfg, {"sink": sink}, queue, registry)), queue, registry


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels or None)


def test_a_worker_survives_a_disk_error_anywhere_in_its_round(tmp_path: Path, caplog, monkeypatch) -> None:
    sink = Sink()
    client, queue, registry = make(tmp_path, sink)
    real_done, calls = queue.done, []

    def done(item):  # the first `done` (after a delivery) fails: before the fix this ended the worker
        calls.append(item)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real_done(item)

    monkeypatch.setattr(queue, "done", done)
    with caplog.at_level(logging.ERROR, "mlops.relay"), client:
        assert client.post("/v1/alertmanager", json=hook(), headers=AUTH).status_code == 202
        wait_for(lambda: queue.depth("sink") == 0 and len(calls) == 2, "the worker died on the OSError")
        assert client.get("/health/live").status_code == 200
        assert metric(registry, "mlops_relay_sink_up", sink="sink") == 1  # back once a round worked
    assert any("delivery round failed (OSError" in r.message for r in caplog.records if r.levelno == logging.ERROR)
    assert len(sink.sent) == 2  # at least once: the item whose `done` failed was sent again, not lost


def test_a_worker_that_ends_is_logged_reported_down_restarted_and_then_fails_liveness(
    tmp_path: Path, caplog, monkeypatch
) -> None:
    runs = []

    async def dying(self) -> None:
        runs.append(self.name)
        raise RuntimeError("a bug")

    monkeypatch.setattr(relay_app.Worker, "run", dying)
    client, _, registry = make(tmp_path, Sink())
    with caplog.at_level(logging.ERROR, "mlops.relay"), client:
        wait_for(lambda: len(runs) == relay_app.MAX_RESTARTS + 1, "not restarted")
        r = wait_for(lambda: (r := client.get("/health/live")).status_code == 503 and r, "liveness did not fail")
        assert r.json()["sinks"]["sink"]["worker"] == "dead" and "sink" in r.json()["reason"]
        assert metric(registry, "mlops_relay_sink_up", sink="sink") == 0
        assert metric(registry, "mlops_relay_worker_restarts_total", sink="sink") == relay_app.MAX_RESTARTS
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("delivery worker ended (RuntimeError: a bug); restarting" in m for m in errors) == relay_app.MAX_RESTARTS
    assert any("not restarted" in m for m in errors)


@pytest.mark.parametrize(
    "error",
    [
        DeliveryError("slack webhook answered 403 invalid_token", retryable=False, sink_down=True),
        DeliveryError("slack webhook answered 410 channel_is_archived", retryable=False, sink_down=True),
        DeliveryError("kafka refused topic t: TopicAuthorizationFailedError", retryable=False, sink_down=True),
    ],
)
def test_a_sink_refusing_every_message_is_down_and_keeps_the_alerts(tmp_path: Path, caplog, error) -> None:
    sink = Sink()
    sink.error = error
    client, queue, registry = make(tmp_path, sink)
    with caplog.at_level(logging.ERROR, "mlops.relay"), client:
        assert client.post("/v1/alertmanager", json=hook(3), headers=AUTH).status_code == 202
        wait_for(lambda: metric(registry, "mlops_relay_sink_up", sink="sink") == 0, "not reported down")
        assert queue.depth("sink") == 3 and queue.dead("sink") == 0
        assert metric(registry, "mlops_relay_dead_letters_total", sink="sink") == 0
        sink.error = None  # the webhook is fixed: everything arrives, in order
        wait_for(lambda: len(sink.sent) == 3, "not delivered once back")
        assert [n.title for n in sink.sent] == [f"FIRING A{i}: alert {i}" for i in range(3)]
        wait_for(lambda: metric(registry, "mlops_relay_sink_up", sink="sink") == 1, "not back up")
    assert any("refuses every message" in r.message for r in caplog.records)


def test_one_refused_message_is_a_dead_letter_the_sink_stays_up_and_dead_is_bounded_and_requeued(
    tmp_path: Path, caplog
) -> None:
    sink = Sink()
    sink.error = DeliveryError("slack webhook answered 400 invalid_blocks", retryable=False)
    client, queue, registry = make(tmp_path, sink, dead_max=2)
    with caplog.at_level(logging.ERROR, "mlops.relay"), client:
        assert client.post("/v1/alertmanager", json=hook(3), headers=AUTH).status_code == 202
        wait_for(lambda: metric(registry, "mlops_relay_dead_letters_total", sink="sink") == 3, "not dead-lettered")
        assert metric(registry, "mlops_relay_sink_up", sink="sink") == 1
        assert queue.dead("sink") == 2 and metric(registry, "mlops_relay_dead_letters_dropped_total", sink="sink") == 1
        assert any("dropped the oldest" in r.message for r in caplog.records if r.levelno == logging.ERROR)
        sink.error = None
        assert queue.requeue_dead("sink") == 2  # what `mlops alert-relay --requeue-dead` does
        wait_for(lambda: len(sink.sent) == 2, "requeued dead letters not delivered")  # no webhook needed to wake it
    assert [n.title for n in sink.sent] == ["FIRING A1: alert 1", "FIRING A2: alert 2"]


def test_an_oversized_body_is_413_and_an_error_line_with_source_and_size(tmp_path: Path, caplog) -> None:
    client, queue, _ = make(tmp_path, Sink(), max_body_bytes=1000)
    with caplog.at_level(logging.ERROR, "mlops.relay"), client:
        body = json.dumps(hook(30)).encode()
        r = client.post("/v1/grafana", content=body, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 413 and queue.depth("sink") == 0
    [line] = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith(f"grafana webhook refused with 413: {len(body)} bytes") and "max_alerts" in line


def test_deeply_nested_json_is_400_not_500(tmp_path: Path) -> None:
    client, queue, _ = make(tmp_path, Sink())
    with client:
        for depth in (100_000, 100):
            body = "[" * depth + "]" * depth
            r = client.post("/v1/alertmanager", content=body, headers={**AUTH, "Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "malformed", (depth, r.text)
        nested: Any = "x"
        for _ in range(100):
            nested = {"a": nested}
        deep = hook()
        deep["alerts"][0]["labels"]["x"] = nested
        r = client.post("/v1/alertmanager", json=deep, headers=AUTH)
        assert r.status_code == 400 and "nested deeper" in r.json()["error"]["message"]
        assert queue.depth("sink") == 0


def test_a_queue_that_cannot_be_written_is_503_and_a_log_line(tmp_path: Path, caplog, monkeypatch) -> None:
    client, queue, _ = make(tmp_path, Sink())

    def full(notes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(queue, "put", full)
    with caplog.at_level(logging.ERROR, "mlops.relay"), client:
        r = client.post("/v1/alertmanager", json=hook(), headers=AUTH)
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unwritable"
    assert any("No space left on device" in r.message for r in caplog.records if r.levelno == logging.ERROR)


def note(title: str) -> Notification:
    return Notification(title=title, kind="alert")


def test_the_bound_holds_under_concurrent_puts(tmp_path: Path) -> None:
    from mlops_cli.relay.queue import QueueFull

    q = DiskQueue(tmp_path, ["a", "b"], max_items=10)
    refused = []
    barrier = threading.Barrier(8)

    def put(i: int) -> None:
        barrier.wait()
        for j in range(5):
            try:
                q.put([note(f"{i}-{j}")])
            except QueueFull:
                refused.append(1)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q.depth("a") == q.depth("b") == 10 and len(refused) == 30


def test_a_put_that_fails_midway_queues_nothing_for_any_sink(tmp_path: Path, monkeypatch) -> None:
    import mlops_cli.relay.queue as queue_module

    q = DiskQueue(tmp_path, ["a", "b"], max_items=10)
    real, calls = queue_module.os.link, []

    def failing_link(src, dst):  # the 3rd link: both notes are in sink a, none yet in sink b
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(queue_module.os, "link", failing_link)
    with pytest.raises(OSError):
        q.put([note("x"), note("y")])
    monkeypatch.setattr(queue_module.os, "link", real)
    assert len(calls) == 3
    assert q.depth("a") == q.depth("b") == 0
    assert not list(tmp_path.glob("*/.*.tmp")) and not list(tmp_path.glob("*/*.json"))
    q.put([note("z")])  # and the bound's reservation was given back
    assert q.depth("a") == q.depth("b") == 1 and q.oldest("b").note.title == "z"
    assert not list((tmp_path / "incoming").iterdir())  # the sinks' links hold the data


def test_names_come_from_a_persisted_counter_not_the_clock(tmp_path: Path, monkeypatch) -> None:
    q = DiskQueue(tmp_path, ["a"], max_items=10)
    q.put([note("first")])
    monkeypatch.setattr(time, "time_ns", lambda: 0)  # a clock set back must not reorder anything
    q = DiskQueue(tmp_path, ["a"], max_items=10)  # a restart
    q.put([note("second")])
    first, second = sorted((tmp_path / "a").glob("*.json"))
    assert first.name == f"{0:020d}.json" and int(second.stem) > 0
    assert int((tmp_path / "seq").read_text()) > int(second.stem)  # the persisted ceiling is past every name given
    assert q.oldest("a").note.title == "first"


def test_intake_never_lists_the_queue_and_other_processes_requeues_are_picked_up(tmp_path: Path, monkeypatch) -> None:
    """put/depth/oldest/done work from the in-memory index: with thousands queued they cost what they cost with one."""
    import mlops_cli.relay.queue as queue_module

    q = DiskQueue(tmp_path, ["a", "b"], max_items=5000)
    for i in range(30):
        q.put([note(f"n{i}")])

    def no_listing(*args, **kwargs):
        raise AssertionError("the queue directory was listed")

    monkeypatch.setattr(queue_module.os, "scandir", no_listing)
    monkeypatch.setattr(queue_module.Path, "glob", no_listing)
    monkeypatch.setattr(queue_module.Path, "iterdir", no_listing)
    q.put([note("last")])
    assert q.depth("a") == q.depth("b") == 31
    item = q.oldest("a")
    assert item.note.title == "n0"
    q.done(item)
    assert q.oldest("a").note.title == "n1" and q.depth("a") == 30 and q.depth("b") == 31
    monkeypatch.undo()
    # another process (`mlops alert-relay --requeue-dead`) moves dead letters back: rescan adds them, oldest first
    other = DiskQueue(tmp_path, ["a", "b"], max_items=5000)
    other.bury(other.oldest("b"))
    assert other.requeue_dead("b") == 1
    (tmp_path / "a" / "dead" / f"{0:020d}.json").write_text('{"title": "n0 again"}')
    assert other.requeue_dead("a") == 1
    assert q.rescan("a") == 1 and q.rescan("b") == 0 and q.depth("a") == 31
    assert q.oldest("a").note.title == "n0 again"


def test_unreadable_items_are_logged_counted_and_set_aside(tmp_path: Path, caplog) -> None:
    seen: list[str] = []
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "01764000000000000000-7-000000.json").write_text("not json")  # an older relay's name
    q = DiskQueue(tmp_path, ["a"], max_items=10, on_unreadable=seen.append)
    q.put([note("good")])  # numbered after what is already there
    assert sorted(p.name for p in (tmp_path / "a").glob("*.json"))[-1] == "01764000000000000001.json"
    with caplog.at_level(logging.ERROR, "mlops.relay"):
        assert q.oldest("a").note.title == "good"
    assert seen == ["a"] and q.dead("a") == 1
    assert any("unreadable" in r.message for r in caplog.records)


def test_a_sink_that_starts_refusing_everything_after_other_failures_is_reported_down(tmp_path: Path) -> None:
    sink = Sink()
    sink.error = DeliveryError("slack webhook answered 503", retryable=True)
    client, queue, registry = make(tmp_path, sink, retries=100)
    with client:
        assert client.post("/v1/alertmanager", json=hook(), headers=AUTH).status_code == 202
        wait_for(
            lambda: (metric(registry, "mlops_relay_delivery_failures_total", sink="sink", retryable="true") or 0) >= 2,
            "no retries",
        )
        assert metric(registry, "mlops_relay_sink_up", sink="sink") == 1  # 2 of 100 retries: not down yet
        sink.error = DeliveryError("slack webhook answered 403 invalid_token", retryable=False, sink_down=True)
        wait_for(lambda: metric(registry, "mlops_relay_sink_up", sink="sink") == 0, "not reported down")
        assert queue.depth("sink") == 1


def test_one_relay_owns_a_queue_directory_and_requeue_beside_it_deletes_no_write_under_way(tmp_path: Path) -> None:
    """A second relay on the same directory would hand out the same names and deliver every alert twice;
    `--requeue-dead` runs beside the relay and must not remove the .tmp file of a write under way."""
    import os

    from mlops_cli.relay.queue import QueueBusy

    owner = DiskQueue(tmp_path, ["a"], max_items=10, exclusive=True)
    with pytest.raises(
        QueueBusy, match=rf"the relay queue {tmp_path} is in use by another relay \(pid {os.getpid()}\)"
    ):
        DiskQueue(tmp_path, ["a"], max_items=10, exclusive=True)
    under_way = tmp_path / "incoming" / f".{5:020d}.json.tmp"  # written, fsynced, not yet linked
    under_way.write_text('{"title": "t"}')
    DiskQueue(tmp_path, ["a"], max_items=10, clean=False).requeue_dead("a")  # what --requeue-dead opens
    assert under_way.exists()
    owner.close()  # (the kernel drops it too when the relay dies, kill -9 included)
    DiskQueue(tmp_path, ["a"], max_items=10, exclusive=True).close()
    assert not under_way.exists()  # the next owner cleans up what a crash left


def test_a_new_counter_ceiling_is_fsynced_with_its_directory_before_a_name_under_it_is_used(
    tmp_path: Path, monkeypatch
) -> None:
    import os

    import mlops_cli.relay.queue as queue_module

    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    q = DiskQueue(tmp_path, ["a"], max_items=10)
    monkeypatch.setattr(queue_module.os, "fsync", fsync)
    q.put([note("first")])  # reserves the first block: writes the seq file
    assert tmp_path.stat().st_ino in synced  # the rename of seq is durable (else a power cut could reuse names)
    assert (tmp_path / "a").stat().st_ino in synced


def test_requeue_skips_a_dead_letter_the_running_relay_dropped_meanwhile(tmp_path: Path, monkeypatch) -> None:
    """--requeue-dead runs beside the relay, which may drop the oldest dead letters (dead_max) under its feet."""
    import mlops_cli.relay.queue as queue_module

    q = DiskQueue(tmp_path, ["a"], max_items=10)
    q.put([note("x"), note("y")])
    q.bury(q.oldest("a"))
    q.bury(q.oldest("a"))
    letters = sorted((tmp_path / "a" / "dead").glob("*.json"))
    real = queue_module.os.replace

    def replace(src, dst):
        if Path(src) == letters[0]:
            Path(src).unlink()  # the relay dropped it just before
        return real(src, dst)

    monkeypatch.setattr(queue_module.os, "replace", replace)
    requeuer = DiskQueue(tmp_path, ["a"], max_items=10, clean=False)
    assert requeuer.requeue_dead("a") == 1
    assert requeuer.oldest("a").note.title == "y"
