"""The relay's ASGI app: webhooks in, the on-disk queue, one delivery worker per sink.

`POST /v1/alertmanager` and `POST /v1/grafana` need `Authorization: Bearer <token>` (401, nothing
queued, otherwise), a JSON alert webhook (400 otherwise; 413 over max_body_bytes). Each alert
becomes one Notification, queued on disk for every sink before the answer (202); 503 when a
sink's queue is full, so the sender retries. Each sink's worker delivers its queue oldest first:
a failure is logged and counted and the item stays queued; the worker waits (backoff doubling up
to max_backoff_s) and tries again, so alerts arrive in order once the sink is back. After
`retries` failures in a row the sink is reported down (an ERROR log line, `mlops_relay_sink_up` 0).
A permanent failure (the sink refuses that message) moves the item to the dead-letter directory,
logged and counted. `GET /metrics` has the relay's own metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..notifiers import DeliveryError, Notifier
from .payloads import MalformedPayload, notifications, parse
from .queue import DiskQueue, QueueFull

log = logging.getLogger("mlops.relay")


@dataclass(frozen=True)
class RelayConfig:
    token: str
    retries: int = 3
    retry_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_body_bytes: int = 1_048_576
    runbook_base_url: str | None = None


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry, sinks: list[str]):
        self.requests = Counter("mlops_relay_requests_total", "Webhook requests, by source and answer status.",
                                ["source", "status"], registry=registry)
        self.received = Counter("mlops_relay_alerts_received_total", "Alerts accepted and queued, by source.",
                                ["source"], registry=registry)
        self.delivered = Counter("mlops_relay_deliveries_total", "Alerts delivered, by sink.", ["sink"],
                                 registry=registry)
        self.failures = Counter("mlops_relay_delivery_failures_total", "Failed delivery attempts, by sink and kind.",
                                ["sink", "retryable"], registry=registry)
        self.dead = Counter("mlops_relay_dead_letters_total", "Alerts a sink refused for good (kept in dead/).",
                            ["sink"], registry=registry)
        self.depth = Gauge("mlops_relay_queue_depth", "Alerts waiting on disk, by sink.", ["sink"], registry=registry)
        self.up = Gauge("mlops_relay_sink_up", "1 while the sink's last delivery worked (or none was needed).",
                        ["sink"], registry=registry)
        for sink in sinks:
            self.delivered.labels(sink)
            self.dead.labels(sink)
            self.up.labels(sink).set(1)
            for retryable in ("true", "false"):
                self.failures.labels(sink, retryable)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class Worker:
    """Delivers one sink's queue, oldest first, with backoff while the sink is down."""

    def __init__(self, name: str, notifier: Notifier, queue: DiskQueue, config: RelayConfig, metrics: RelayMetrics):
        self.name, self.notifier, self.queue, self.config, self.metrics = name, notifier, queue, config, metrics
        self.wake = asyncio.Event()
        self.failed = 0  # failures in a row

    async def run(self) -> None:
        while True:
            self.wake.clear()  # before looking: an alert queued meanwhile sets it again
            try:
                item = await asyncio.to_thread(self.queue.oldest, self.name)
                self.metrics.depth.labels(self.name).set(await asyncio.to_thread(self.queue.depth, self.name))
            except OSError as exc:  # the queue's disk: say so, keep the worker alive, look again later
                log.error("%s queue unreadable in %s: %s", self.name, self.queue.directory, exc)
                await asyncio.sleep(self.config.max_backoff_s)
                continue
            if item is None:
                await self.wake.wait()
                continue
            try:
                await asyncio.to_thread(self.notifier.send, item.note)
            except Exception as exc:  # DeliveryError, or a bug in a notifier: never lose the item
                retryable = exc.retryable if isinstance(exc, DeliveryError) else True
                message = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                self.metrics.failures.labels(self.name, str(retryable).lower()).inc()
                if not retryable:
                    await asyncio.to_thread(self.queue.bury, item)
                    self.metrics.dead.labels(self.name).inc()
                    log.error("%s refused %r for good (kept in %s): %s", self.name, item.note.title,
                              item.path.parent / "dead", message)
                    continue
                self.failed += 1
                delay = min(self.config.retry_backoff_s * 2 ** (self.failed - 1), self.config.max_backoff_s)
                depth = self.queue.depth(self.name)
                if self.failed == self.config.retries + 1:
                    self.metrics.up.labels(self.name).set(0)
                    log.error("%s is down after %d attempts: %s; %d alerts kept on disk, retrying every %gs at most",
                              self.name, self.failed, message, depth, self.config.max_backoff_s)
                else:
                    log.warning("%s delivery failed (attempt %d, %d alerts queued, next in %.1fs): %s",
                                self.name, self.failed, depth, delay, message)
                await asyncio.sleep(delay)
                continue
            await asyncio.to_thread(self.queue.done, item)
            self.metrics.delivered.labels(self.name).inc()
            if self.failed:
                log.warning("%s is back after %d failed attempts: delivering the queued alerts", self.name, self.failed)
            self.failed = 0
            self.metrics.up.labels(self.name).set(1)


def create_app(config: RelayConfig, notifiers: Mapping[str, Notifier], queue: DiskQueue,
               registry: CollectorRegistry) -> Starlette:
    metrics = RelayMetrics(registry, list(notifiers))
    workers = {name: Worker(name, n, queue, config, metrics) for name, n in notifiers.items()}
    expected = f"Bearer {config.token}".encode()

    def endpoint(source: str) -> Any:
        async def receive(request: Request) -> Response:
            def answer(response: Response) -> Response:
                metrics.requests.labels(source, str(response.status_code)).inc()
                return response

            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                log.warning("%s webhook from %s refused: %s token", source,
                            request.client.host if request.client else "?", "wrong" if given else "no")
                return answer(_error(401, "unauthorized", "missing or wrong bearer token"))
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
                return answer(_error(413, "too_large", f"the body is over {config.max_body_bytes} bytes"))
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > config.max_body_bytes:
                    return answer(_error(413, "too_large", f"the body is over {config.max_body_bytes} bytes"))
            try:
                hook = parse(json.loads(body))
            except (ValueError, UnicodeDecodeError) as exc:
                reason = str(exc) if isinstance(exc, MalformedPayload) else "the body is not JSON"
                log.warning("%s webhook refused: malformed payload: %s", source, reason)
                return answer(_error(400, "malformed", f"not an alert webhook: {reason}"))
            notes = notifications(hook, source, config.runbook_base_url)
            try:
                await asyncio.to_thread(queue.put, notes)
            except QueueFull as exc:
                log.error("%s webhook refused with 503: %s", source, exc)
                return answer(_error(503, "queue_full", str(exc)))
            metrics.received.labels(source).inc(len(notes))
            for worker in workers.values():
                worker.wake.set()
            return answer(JSONResponse({"queued": len(notes), "sinks": list(workers)}, status_code=202))
        return receive

    async def prometheus(request: Request) -> Response:
        for name in workers:
            metrics.depth.labels(name).set(queue.depth(name))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "alive", "sinks": {n: {"queued": queue.depth(n), "dead": queue.dead(n),
                                                               "failures_in_a_row": w.failed}
                                                           for n, w in workers.items()}})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(w.run(), name=f"relay-{n}") for n, w in workers.items()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    routes = [Route("/v1/alertmanager", endpoint("alertmanager"), methods=["POST"]),
              Route("/v1/grafana", endpoint("grafana"), methods=["POST"]),
              Route("/metrics", prometheus, methods=["GET"]),
              Route("/health/live", health, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.workers = workers
    app.state.metrics = metrics
    return app
