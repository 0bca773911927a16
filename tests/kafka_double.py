"""KafkaBrokerDouble: a single-node Kafka broker test double that speaks the Kafka wire protocol.

Delivery to a real Kafka-protocol broker is tested against Tansu (tests/tansu_broker.py); this
double stays for the errors a real broker cannot be made to give on demand (a refused topic, a
broker that goes away and comes back on the same port mid-test).

Apache Kafka itself cannot run here (it is a JVM application that is neither in
Debian nor on PyPI/npm, and the tools that fetch it download a tarball from apache.org; Java 17
and mvn are here, but `mvn dependency:copy-dependencies` of org.apache.kafka:kafka_2.13:4.4.0 fails
at once with "Unknown host" for Maven Central, which neither this machine nor CI reaches), so the
relay's tests run the real client library (kafka-python's KafkaProducer) against this double over
TCP on 127.0.0.1. It answers the requests a producer sends, in the versions it advertises:
ApiVersions (key 18, v0-3), Metadata (key 3, v0-9: itself as the only broker, every topic asked
for with one partition, created on demand as a broker with auto.create.topics.enable does) and
Produce (key 0, v3-9: record batches v2 appended to an in-memory log, offsets returned;
TOPIC_AUTHORIZATION_FAILED for a topic in `refused`). Frames
are decoded and encoded with kafka-python's message classes, which are generated from Apache
Kafka's own JSON message definitions; record batches are read with kafka-python's MemoryRecords
(which checks their CRC). `stop()` closes the listener and every connection (a broker that went
down); `start()` listens again on the same port. Anything else it is sent closes the connection.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():  # kafka-python 3.0 loads its schemas with importlib.resources.read_text,
    warnings.simplefilter("ignore", DeprecationWarning)  # deprecated on Python 3.11-3.12 (not ours to fix)
    from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
    from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse
    from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
    from kafka.record import MemoryRecords

NODE_ID = 1
SUPPORTED = {  # api key -> (request, response, min version, max version)
    18: (ApiVersionsRequest, ApiVersionsResponse, 0, 3),
    3: (MetadataRequest, MetadataResponse, 0, 9),
    0: (ProduceRequest, ProduceResponse, 3, 9),
}
UNSUPPORTED_VERSION = 35
TOPIC_AUTHORIZATION_FAILED = 29


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.value or b"null")


class KafkaBrokerDouble:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refused: set[str] = (
            set()
        )  # topics whose produce requests get TOPIC_AUTHORIZATION_FAILED (29), as an ACL would
        self.requests: list[tuple[int, int]] = []  # (api key, version) of every request answered
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> KafkaBrokerDouble:
        """Listen (again, on the same port after a stop). The port is chosen below the ephemeral range:
        a client that keeps reconnecting to a local ephemeral port while nothing listens there can end
        up connected to itself (TCP simultaneous open) and hold the port."""
        for attempt in range(50):
            port = self.port or random.randrange(20000, 32000)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                break
            except OSError:
                sock.close()
                if self.port or attempt == 49:
                    raise
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(): the port is free
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def topic(self, name: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == name]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                size = struct.unpack(">i", self._read(conn, 4))[0]
                frame = self._read(conn, size)
                api_key, version, correlation_id = struct.unpack(">hhi", frame[:8])
                response = self._answer(api_key, version, frame)
                if response is None:
                    return
                response.with_header(correlation_id=correlation_id)
                conn.sendall(response.encode(header=True, framed=True))
        except (ConnectionError, OSError, struct.error):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, api_key: int, version: int, frame: bytes) -> Any:
        if api_key not in SUPPORTED:
            return None
        request_cls, response_cls, low, high = SUPPORTED[api_key]
        if api_key == 18 and version > high:  # as a broker does: a v0 answer naming what it supports
            return ApiVersionsResponse[0](error_code=UNSUPPORTED_VERSION, api_keys=self._api_keys(0))
        if not low <= version <= high:
            return None
        request = request_cls.decode(frame, version=version, header=True)
        self.requests.append((api_key, version))
        return getattr(self, f"_{request_cls.__name__}")(request, response_cls[version], version)

    @staticmethod
    def _api_keys(version: int) -> list[Any]:
        item = ApiVersionsResponse[version].ApiVersion
        return [
            item(api_key=k, min_version=lo, max_version=hi, version=version)
            for k, (_, _, lo, hi) in sorted(SUPPORTED.items())
        ]

    def _ApiVersionsRequest(self, request: Any, response: Any, version: int) -> Any:
        return response(error_code=0, api_keys=self._api_keys(version), throttle_time_ms=0)

    def _MetadataRequest(self, request: Any, response: Any, version: int) -> Any:
        names = sorted({m.topic for m in self.messages}) if request.topics is None else [t.name for t in request.topics]
        topic_cls = response.MetadataResponseTopic
        part_cls = topic_cls.MetadataResponsePartition
        topics = [
            topic_cls(
                error_code=0,
                name=name,
                is_internal=False,
                version=version,
                partitions=[
                    part_cls(
                        error_code=0,
                        partition_index=0,
                        leader_id=NODE_ID,
                        leader_epoch=0,
                        replica_nodes=[NODE_ID],
                        isr_nodes=[NODE_ID],
                        offline_replicas=[],
                        version=version,
                    )
                ],
            )
            for name in names
        ]
        broker = response.MetadataResponseBroker(
            node_id=NODE_ID, host="127.0.0.1", port=self.port, rack=None, version=version
        )
        return response(
            throttle_time_ms=0, brokers=[broker], cluster_id="mlops-test-double", controller_id=NODE_ID, topics=topics
        )

    def _ProduceRequest(self, request: Any, response: Any, version: int) -> Any:
        topic_cls = response.TopicProduceResponse
        part_cls = topic_cls.PartitionProduceResponse
        answers = []
        for topic in request.topic_data:
            parts = []
            for data in topic.partition_data:
                if topic.name in self.refused:
                    parts.append(
                        part_cls(
                            index=data.index,
                            error_code=TOPIC_AUTHORIZATION_FAILED,
                            base_offset=-1,
                            log_append_time_ms=-1,
                            log_start_offset=-1,
                            record_errors=[],
                            error_message=None,
                            version=version,
                        )
                    )
                    continue
                records = MemoryRecords(bytes(data.records))
                with self._lock:
                    base = sum(1 for m in self.messages if m.topic == topic.name and m.partition == data.index)
                    offset = base
                    while records.has_next():
                        batch = records.next_batch()
                        if not batch.validate_crc():
                            raise ConnectionError("corrupt record batch")  # a broker answers CORRUPT_MESSAGE
                        for record in batch:
                            self.messages.append(
                                Message(topic.name, data.index, offset, record.key, record.value, list(record.headers))
                            )
                            offset += 1
                parts.append(
                    part_cls(
                        index=data.index,
                        error_code=0,
                        base_offset=base,
                        log_append_time_ms=-1,
                        log_start_offset=0,
                        record_errors=[],
                        error_message=None,
                        version=version,
                    )
                )
            answers.append(topic_cls(name=topic.name, partition_responses=parts, version=version))
        return response(responses=answers, throttle_time_ms=0)
