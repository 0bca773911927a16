"""Adaptive micro-batching: concurrent predict requests are coalesced into one :class:`Batch`.

A request's body joins a queue and its caller awaits a future. One consumer task takes, as
soon as the chain is free, every request queued by then (up to ``max_batch_requests``) and runs
them through the module chain once; each caller gets exactly its own predictions (or its own
error) back. Nothing waits on purpose by default: while one batch runs on the event loop the
next one forms from the requests that arrive meanwhile, so batches grow with the load and a
lone request is answered at once. ``max_batch_wait_ms`` > 0 adds a wait for more requests when
a batch would be smaller than the maximum. A queue already holding ``max_queue`` requests sheds
load: 503 with ``Retry-After`` rather than unbounded latency.

Large work leaves the event loop: a batch stops growing once its bodies reach
``max_batch_bytes`` (a request larger than that is a batch of its own), and a batch whose bodies
add up to ``offload_bytes`` or more runs through the chain in a worker thread (on an event loop
of its own), so parsing and scoring megabytes never stall the server's loop: ``/health/live``
and small requests keep being answered. Batches still run one at a time, in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from serving.errors import NotReady, ServingError, one_line
from serving.metrics import Metrics
from serving.pipeline import Batch, Pipeline

log = logging.getLogger("serving")


class Overloaded(ServingError):
    """503: the queue is full; the client should retry."""

    status, code = 503, "overloaded"
    headers: ClassVar[Mapping[str, str] | None] = {"retry-after": "1"}


class Batcher:
    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        max_batch_requests: int,
        max_batch_wait_ms: float,
        max_queue: int,
        max_batch_bytes: int = 1 << 20,
        offload_bytes: int | None = 65_536,
    ):
        self.pipeline = pipeline
        self.max_bytes = max_batch_bytes
        self.offload_bytes = offload_bytes  # None: never leave the loop
        self._executor: ThreadPoolExecutor | None = None
        self._worker = threading.local()  # the worker thread's own event loop
        self.max_requests = max_batch_requests
        self.max_wait = max_batch_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: deque[tuple[bytes | list[Any], asyncio.Future, float]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._rows = metrics.batch_rows
        self._requests = metrics.batch_requests
        self._wait = metrics.queue_wait
        self._rejected = metrics.queue_rejected

    def start(self) -> None:
        """Start the consumer on the running loop (the app's lifespan startup calls this)."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="serving-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            self._executor.submit(self._close_worker_loop)
            self._executor.shutdown(wait=False)
            self._executor = None
        while self._queue:
            _, future, _ = self._queue.popleft()
            if not future.done():
                future.set_exception(NotReady("the server is stopping"))

    async def submit(self, body: bytes | list[Any]) -> list[dict[str, Any]]:
        """The predictions for one request body (or its decoded rows); raises its ServingError."""
        if self._wake is None:
            raise NotReady("the model is not loaded yet")
        if len(self._queue) >= self.max_queue:
            self._rejected.inc()
            raise Overloaded(f"the server is at capacity ({self.max_queue} requests queued); retry shortly")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((body, future, time.perf_counter()))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        assert self._wake is not None
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
            # let requests that are already on their way join this batch
            if self.max_wait > 0 and len(queue) < self.max_requests:
                await asyncio.sleep(self.max_wait)
            else:
                await asyncio.sleep(0)
            items: list[tuple[bytes | list[Any], asyncio.Future, float]] = []
            size = 0
            while queue and len(items) < self.max_requests:
                item = queue[0]
                if items and size + len(item[0]) > self.max_bytes:
                    break
                queue.popleft()
                if not item[1].done():  # else its caller went away
                    items.append(item)
                    size += len(item[0])
            if items:
                await self._process(items, size)

    def _in_worker(self, batch: Batch) -> Batch:
        """Run the chain on the worker thread's own event loop (created on first use)."""
        loop = getattr(self._worker, "loop", None)
        if loop is None:
            loop = self._worker.loop = asyncio.new_event_loop()
        return loop.run_until_complete(self.pipeline.process(batch))

    def _close_worker_loop(self) -> None:
        loop = getattr(self._worker, "loop", None)
        if loop is not None:
            loop.close()
            self._worker.loop = None

    async def _process(self, items: list[tuple[bytes | list[Any], asyncio.Future, float]], size: int = 0) -> None:
        now = time.perf_counter()
        for _, _, queued in items:
            self._wait.observe(now - queued)
        batch = Batch([body for body, _, _ in items])
        try:
            if self.offload_bytes is not None and size >= self.offload_bytes:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="serving-chain")
                batch = await asyncio.get_running_loop().run_in_executor(self._executor, self._in_worker, batch)
            else:
                batch = await self.pipeline.process(batch)
        except Exception as exc:  # a bug, not a request error: answer 500, keep serving
            log.error("the module chain failed: %s: %s", type(exc).__name__, one_line(exc))
            for _, future, _ in items:
                if not future.done():
                    future.set_exception(ServingError("internal server error"))
            return
        self._requests.observe(len(items))
        self._rows.observe(len(batch.features) if batch.features is not None else 0)
        for (_, future, _), error, predictions in zip(items, batch.errors, batch.predictions):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            elif predictions is None:
                future.set_exception(ServingError("no module produced predictions", code="prediction_failed"))
            else:
                future.set_result(predictions)
