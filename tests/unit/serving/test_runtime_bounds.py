"""The server's own bounds, in process: spec checks, the byte budget, body reading, batches
bounded in bytes and run off the event loop when large, rows per request (issue 10, item 5).
The same bounds on a real server: tests/integration/serving/test_runtime_limits.py."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from serving_bundles import IRIS_LABELS, IRIS_ROWS, write_bundle

from serving.admission import ByteBudget, Shed
from serving.asgi import read_body
from serving.errors import BundleError, PayloadTooLarge
from serving.spec import ServerSpec, load_spec

pytestmark = pytest.mark.anyio


def test_defaults_and_a_budget_smaller_than_one_body_is_refused(tmp_path: Path, iris_model) -> None:
    server = ServerSpec()
    assert (server.max_rows, server.max_inflight_bytes, server.max_connections) == (10_000, 8 << 20, 1000)
    assert (server.max_header_bytes, server.max_headers) == (16_384, 100)
    assert (server.idle_timeout_seconds, server.header_timeout_seconds, server.body_timeout_seconds) == (5, 10, 30)
    # a large max_body_bytes alone raises the budget to one body (bundles of older assemble settings)
    assert ServerSpec.model_validate({"max_body_bytes": 10_000_000}).max_inflight_bytes == 10_000_000
    bundle = write_bundle(
        tmp_path / "b",
        iris_model,
        labels=IRIS_LABELS,
        max_body_bytes=10_000_000,
        server={"max_inflight_bytes": 8_388_608},
    )
    with pytest.raises(
        BundleError,
        match=r"server: max_inflight_bytes \(8388608\) must be at least max_body_bytes "
        r"\(10000000\)",
    ):
        load_spec(bundle)
    bundle = write_bundle(tmp_path / "c", iris_model, labels=IRIS_LABELS, server={"max_headers": 2})
    with pytest.raises(BundleError, match=r"server.max_headers: Input should be greater than or equal to 8"):
        load_spec(bundle)


def test_the_byte_budget_sheds_over_its_limit_and_counts() -> None:
    class Counter:
        value = 0

        def inc(self) -> None:
            self.value += 1

    rejected = Counter()
    budget = ByteBudget(100, rejected)
    budget.acquire(60)
    with pytest.raises(Shed) as shed:
        budget.acquire(41)
    assert shed.value.status == 503 and shed.value.headers == {"retry-after": "1"} and rejected.value == 1
    budget.acquire(40)
    budget.release(60)
    budget.acquire(60)
    assert budget.used == 100 and budget.peak == 100


def receiver(chunks: list[bytes]):
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


def scope(length: int | None) -> dict:
    return {"headers": [] if length is None else [(b"content-length", str(length).encode())]}


async def test_read_body_reserves_declared_or_received_bytes_and_fills_one_buffer() -> None:
    budget, held = ByteBudget(1000), [0]
    body = await read_body(scope(9), receiver([b"abc", b"def", b"ghi"]), 100, budget, held)
    assert bytes(body) == b"abcdefghi" and isinstance(body, bytearray) and held == [9] and budget.used == 9
    one = await read_body(scope(3), receiver([b"xyz"]), 100, budget, held)
    assert one == b"xyz" and held == [12]
    chunked = await read_body(scope(None), receiver([b"12", b"345"]), 100, budget, held)
    assert chunked == b"12345" and held == [17] and budget.used == 17
    with pytest.raises(Shed):  # declared: shed before a byte is read
        await read_body(scope(990), receiver([b"never read"]), 1000, budget, [0])
    with pytest.raises(Shed):  # chunked: shed once the chunks received pass the budget
        await read_body(scope(None), receiver([b"a" * 500, b"b" * 500]), 1000, budget, [0])
    with pytest.raises(PayloadTooLarge):
        await read_body(scope(None), receiver([b"a" * 60, b"b" * 60]), 100, None, None)


async def test_large_batches_run_off_the_event_loop_and_batches_are_bounded_in_bytes(
    served, tmp_path: Path, iris_model
) -> None:
    bundle = write_bundle(
        tmp_path / "b", iris_model, labels=IRIS_LABELS, server={"max_batch_bytes": 4096, "offload_bytes": 2048}
    )
    seen: list[tuple[str, int]] = []
    async with served(bundle) as s:
        chain = s.app.state.pipeline
        original = chain.process

        async def recording(batch):
            seen.append((threading.current_thread().name, sum(len(b) for b in batch.bodies)))
            return await original(batch)

        chain.process = recording
        small = json.dumps({"instances": IRIS_ROWS}).encode()
        large = json.dumps({"instances": IRIS_ROWS * 40}).encode()  # about 3 KB
        assert 2048 < len(large) < 4096
        answers = await asyncio.gather(*(s.client.post("/v1/predict", content=b) for b in [large] * 4 + [small]))
        assert [r.status_code for r in answers] == [200] * 5
        assert len(answers[0].json()["predictions"]) == 120
    assert all(size <= 4096 or size == len(large) for _, size in seen)  # two large never share a batch
    assert {name.startswith("serving-chain") for name, size in seen if size >= 2048} == {True}
    assert {name for name, size in seen if size < 2048} <= {threading.main_thread().name}


async def test_rows_over_max_rows_answer_413_and_free_their_decoded_json(served, tmp_path: Path, iris_model) -> None:
    bundle = write_bundle(tmp_path / "b", iris_model, labels=IRIS_LABELS, server={"max_rows": 3})
    async with served(bundle) as s:
        ok = await s.client.post("/v1/predict", json={"instances": IRIS_ROWS})
        over = await s.client.post("/v1/predict", json={"instances": IRIS_ROWS + IRIS_ROWS[:1]})
    assert ok.status_code == 200
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_many_instances"


async def test_a_failed_requests_error_keeps_no_frames_alive(tmp_path: Path, iris_model) -> None:
    from prometheus_client import CollectorRegistry

    from serving.app import create_app
    from serving.pipeline import Batch

    bundle = write_bundle(tmp_path / "b", iris_model, labels=IRIS_LABELS, server={"max_rows": 3})
    app = create_app(load_spec(bundle), bundle, CollectorRegistry())
    preprocessing = app.state.pipeline.modules[0]
    batch = await preprocessing.process(Batch.of(json.dumps({"instances": IRIS_ROWS * 2}).encode()))
    assert batch.errors[0].code == "too_many_instances"
    assert batch.errors[0].__traceback__ is None  # its frames held the decoded instances
