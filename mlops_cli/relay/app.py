"""The relay's ASGI app: webhooks in, the on-disk queue, one delivery worker per sink.

`POST /v1/alertmanager` and `POST /v1/grafana` need `Authorization: Bearer <token>` (401, nothing
queued, otherwise), a JSON alert webhook (400 otherwise; 413 over max_body_bytes). Each alert
becomes one Notification, queued on disk for every sink before the answer (202); 503 when a
sink's queue is full, so the sender retries. Intake costs the same however long the queue is (the
queue keeps its index in memory; its disk writes run on their own threads, side by side). Each
sink's worker delivers its queue oldest first: a failure is logged and counted and the item stays
queued; the worker waits (backoff doubling up to max_backoff_s) and tries again, so alerts arrive
in order once the sink is back. After `retries` failures in a row the sink is reported down (an
ERROR log line, `mlops_relay_sink_up` 0).
A sink that refuses every message (a revoked webhook, an archived channel, a Kafka authorization
error) is reported down at once and its items stay queued. A permanent failure of one message
(the sink refuses that message: malformed, too large) moves the item to the dead-letter directory,
logged and counted. `GET /metrics` has the relay's own metrics (with metrics_token: only for that
bearer token; with metrics_port: only on that port, which takes no webhooks); `GET /health/live`
answers 503 once a delivery worker has died more than MAX_RESTARTS times (so the pod is restarted).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..notifiers import DeliveryError, Notifier
from ..retry import backoff_delay
from .payloads import MalformedPayload, notifications, parse
from .queue import DiskQueue, Item, QueueFull

log = logging.getLogger("mlops.relay")


@dataclass(frozen=True)
class RelayConfig:
    token: str
    retries: int = 3
    retry_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_body_bytes: int = 1_048_576
    runbook_base_url: str | None = None
    metrics_token: str | None = None  # GET /metrics needs it as a bearer token; None: open
    metrics_port: int | None = None  # serve /metrics only on this port (and webhooks only on the others)


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry, sinks: list[str]):
        self.requests = Counter(
            "mlops_relay_requests_total",
            "Webhook requests, by source and answer status.",
            ["source", "status"],
            registry=registry,
        )
        self.received = Counter(
            "mlops_relay_alerts_received_total", "Alerts accepted and queued, by source.", ["source"], registry=registry
        )
        self.delivered = Counter(
            "mlops_relay_deliveries_total", "Alerts delivered, by sink.", ["sink"], registry=registry
        )
        self.failures = Counter(
            "mlops_relay_delivery_failures_total",
            "Failed delivery attempts, by sink; retryable=false: the alert became a dead letter.",
            ["sink", "retryable"],
            registry=registry,
        )
        self.dead = Counter(
            "mlops_relay_dead_letters_total",
            "Alerts a sink refused for good (kept in dead/).",
            ["sink"],
            registry=registry,
        )
        self.depth = Gauge("mlops_relay_queue_depth", "Alerts waiting on disk, by sink.", ["sink"], registry=registry)
        self.up = Gauge(
            "mlops_relay_sink_up",
            "1 while the sink's last delivery worked (or none was needed).",
            ["sink"],
            registry=registry,
        )
        self.queue_max = Gauge(
            "mlops_relay_queue_max", "Most alerts a sink's queue holds (relay.queue_max).", registry=registry
        )
        self.dropped = Counter(
            "mlops_relay_dead_letters_dropped_total",
            "Dead letters deleted, oldest first, to keep dead/ within relay.dead_max.",
            ["sink"],
            registry=registry,
        )
        self.unreadable = Counter(
            "mlops_relay_unreadable_items_total",
            "Queued files that could not be read back (moved to dead/).",
            ["sink"],
            registry=registry,
        )
        self.restarts = Counter(
            "mlops_relay_worker_restarts_total",
            "Delivery workers that ended and were started again.",
            ["sink"],
            registry=registry,
        )
        for sink in sinks:
            self.delivered.labels(sink)
            self.dead.labels(sink)
            self.up.labels(sink).set(1)
            self.dropped.labels(sink)
            self.unreadable.labels(sink)
            self.restarts.labels(sink)
            for retryable in ("true", "false"):
                self.failures.labels(sink, retryable)


MAX_RESTARTS = 5
MAX_JSON_DEPTH = 64
INTAKE_THREADS = 16  # concurrent queue writes (their fsyncs overlap); apart from the workers' threads


def _depth(value: Any, limit: int) -> bool:
    """True when `value` nests deeper than `limit` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class Worker:
    """Delivers one sink's queue, oldest first, with backoff while the sink is down.

    Nothing in one round (the disk, a notifier's bug) ends the loop: it is logged at ERROR, the sink
    is reported down and the round is tried again after a pause. Should the task end anyway, the
    app's done-callback logs it, reports the sink down and starts it again (see create_app).
    """

    def __init__(self, name: str, notifier: Notifier, queue: DiskQueue, config: RelayConfig, metrics: RelayMetrics):
        self.name, self.notifier, self.queue, self.config, self.metrics = name, notifier, queue, config, metrics
        self.wake = asyncio.Event()
        self.failed = 0  # failures in a row
        self.down = False  # reported down (logged once per outage)
        self.scanned = time.monotonic()  # the queue's index was built from the directory just now

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the disk, a bug: say so, keep the worker alive, look again later
                self.metrics.up.labels(self.name).set(0)
                log.error(
                    "%s delivery round failed (%s: %s); the alerts stay on disk, trying again in %gs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    self.config.max_backoff_s,
                )
                await asyncio.sleep(self.config.max_backoff_s)

    async def round(self) -> None:
        """Look at the queue once: deliver its oldest item, or wait for one."""
        self.wake.clear()  # before looking: an alert queued meanwhile sets it again
        if time.monotonic() - self.scanned >= self.config.max_backoff_s:  # dead letters moved back (--requeue-dead)
            self.scanned = time.monotonic()
            await asyncio.to_thread(self.queue.rescan, self.name)
        item = await asyncio.to_thread(self.queue.oldest, self.name)
        self.metrics.depth.labels(self.name).set(self.queue.depth(self.name))
        if item is None:
            try:  # woken by a webhook; also look now and then for dead letters moved back (--requeue-dead)
                await asyncio.wait_for(self.wake.wait(), timeout=self.config.max_backoff_s)
            except asyncio.TimeoutError:
                pass
            return
        try:
            await asyncio.to_thread(self.notifier.send, item.note)
        except Exception as exc:  # DeliveryError, or a bug in a notifier: never lose the item
            await self.failed_delivery(item, exc)
            return
        await asyncio.to_thread(self.queue.done, item)
        self.metrics.delivered.labels(self.name).inc()
        if self.failed:
            log.warning("%s is back after %d failed attempts: delivering the queued alerts", self.name, self.failed)
        self.failed = 0
        self.down = False
        self.metrics.up.labels(self.name).set(1)

    async def failed_delivery(self, item: Item, exc: Exception) -> None:
        delivery = isinstance(exc, DeliveryError)
        sink_down = isinstance(exc, DeliveryError) and exc.sink_down
        dead = isinstance(exc, DeliveryError) and not exc.retryable and not sink_down
        message = str(exc) if delivery else f"{type(exc).__name__}: {exc}"
        self.metrics.failures.labels(self.name, str(not dead).lower()).inc()
        if dead:  # this message only: the sink answered, so it is up
            await asyncio.to_thread(self.queue.bury, item)
            self.metrics.dead.labels(self.name).inc()
            self.metrics.up.labels(self.name).set(1)
            self.failed, self.down = 0, False
            log.error(
                "%s refused %r for good (kept in %s): %s",
                self.name,
                item.note.title,
                item.path.parent / "dead",
                message,
            )
            return
        self.failed += 1
        delay = backoff_delay(self.failed, self.config.retry_backoff_s, self.config.max_backoff_s)
        depth = self.queue.depth(self.name)
        if sink_down and not self.down:  # refuses every message: down now, no point waiting for retries
            self.down = True
            self.metrics.up.labels(self.name).set(0)
            log.error(
                "%s is down: it refuses every message (%s); %d alerts kept on disk, retrying every %gs at most",
                self.name,
                message,
                depth,
                self.config.max_backoff_s,
            )
        elif self.failed >= self.config.retries + 1 and not self.down:
            self.down = True
            self.metrics.up.labels(self.name).set(0)
            log.error(
                "%s is down after %d attempts: %s; %d alerts kept on disk, retrying every %gs at most",
                self.name,
                self.failed,
                message,
                depth,
                self.config.max_backoff_s,
            )
        else:
            log.warning(
                "%s delivery failed (attempt %d, %d alerts queued, next in %.1fs): %s",
                self.name,
                self.failed,
                depth,
                delay,
                message,
            )
        await asyncio.sleep(delay)


def create_app(
    config: RelayConfig, notifiers: Mapping[str, Notifier], queue: DiskQueue, registry: CollectorRegistry
) -> Starlette:
    metrics = RelayMetrics(registry, list(notifiers))
    metrics.queue_max.set(queue.max_items)
    queue.on_unreadable = lambda sink: metrics.unreadable.labels(sink).inc()
    queue.on_dropped = lambda sink: metrics.dropped.labels(sink).inc()
    tasks: dict[str, asyncio.Task] = {}
    restarts: dict[str, int] = {name: 0 for name in notifiers}
    workers = {name: Worker(name, n, queue, config, metrics) for name, n in notifiers.items()}
    expected = f"Bearer {config.token}".encode()
    intake = ThreadPoolExecutor(INTAKE_THREADS, thread_name_prefix="relay-intake")
    metrics_expected = f"Bearer {config.metrics_token}".encode() if config.metrics_token else None

    def on_metrics_port(request: Request) -> bool:
        server = request.scope.get("server")
        return config.metrics_port is not None and server is not None and server[1] == config.metrics_port

    def endpoint(source: str) -> Any:
        async def receive(request: Request) -> Response:
            def answer(response: Response) -> Response:
                metrics.requests.labels(source, str(response.status_code)).inc()
                return response

            if on_metrics_port(request):
                return _error(404, "not_found", "webhooks are taken on the relay's webhook port")

            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                log.warning(
                    "%s webhook from %s refused: %s token",
                    source,
                    request.client.host if request.client else "?",
                    "wrong" if given else "no",
                )
                return answer(_error(401, "unauthorized", "missing or wrong bearer token"))

            def too_large(size: str) -> Response:
                # Alertmanager does not retry a 4xx: these alerts are lost unless someone reads this line
                log.error(
                    "%s webhook refused with 413: %s bytes, over relay.max_body_bytes %d; its alerts are "
                    "NOT relayed (lower max_alerts in Alertmanager's webhook_config or raise max_body_bytes)",
                    source,
                    size,
                    config.max_body_bytes,
                )
                return answer(_error(413, "too_large", f"the body is over {config.max_body_bytes} bytes"))

            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
                return too_large(length if length.isdigit() else "an invalid Content-Length of")
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > config.max_body_bytes:
                    return too_large(f"more than {config.max_body_bytes}")
            try:
                data = json.loads(body)
                if _depth(data, MAX_JSON_DEPTH):
                    raise MalformedPayload(f"nested deeper than {MAX_JSON_DEPTH} levels")
                hook = parse(data)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                reason = (
                    str(exc)
                    if isinstance(exc, MalformedPayload)
                    else "nested too deeply"
                    if isinstance(exc, RecursionError)
                    else "the body is not JSON"
                )
                log.warning("%s webhook refused: malformed payload: %s", source, reason)
                return answer(_error(400, "malformed", f"not an alert webhook: {reason}"))
            notes = notifications(hook, source, config.runbook_base_url)
            try:
                await asyncio.get_running_loop().run_in_executor(intake, queue.put, notes)
            except QueueFull as exc:
                log.error("%s webhook refused with 503: %s", source, exc)
                return answer(_error(503, "queue_full", str(exc)))
            except OSError as exc:  # the queue's disk (full, read-only): nothing was queued, the sender retries
                log.error(
                    "%s webhook refused with 503: cannot write the queue in %s: %s",
                    source,
                    queue.directory,
                    exc.strerror or type(exc).__name__,
                )
                return answer(_error(503, "queue_unwritable", "the relay cannot write its queue; try again later"))
            metrics.received.labels(source).inc(len(notes))
            for worker in workers.values():
                worker.wake.set()
            return answer(JSONResponse({"queued": len(notes), "sinks": list(workers)}, status_code=202))

        return receive

    async def prometheus(request: Request) -> Response:
        if config.metrics_port is not None and not on_metrics_port(request):
            return _error(404, "not_found", "/metrics is served on relay.metrics_port")
        if metrics_expected is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), metrics_expected
        ):
            return _error(401, "unauthorized", "missing or wrong bearer token for /metrics")
        for name in workers:
            metrics.depth.labels(name).set(queue.depth(name))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        dead = [n for n, task in tasks.items() if task.done()]
        sinks = {
            n: {
                "queued": queue.depth(n),
                "dead": queue.dead(n),
                "failures_in_a_row": w.failed,
                "worker": "dead" if n in dead else "running",
                "worker_restarts": restarts[n],
            }
            for n, w in workers.items()
        }
        if dead:
            return JSONResponse(
                {"status": "dead", "reason": f"delivery worker of {', '.join(dead)} ended", "sinks": sinks},
                status_code=503,
            )
        return JSONResponse({"status": "alive", "sinks": sinks})

    stopping = False

    def start(name: str) -> None:
        task = asyncio.create_task(workers[name].run(), name=f"relay-{name}")
        task.add_done_callback(lambda t: ended(name, t))
        tasks[name] = task

    def ended(name: str, task: asyncio.Task) -> None:
        if stopping or task.cancelled():
            return
        exc = task.exception()
        metrics.up.labels(name).set(0)
        if restarts[name] >= MAX_RESTARTS:
            log.error(
                "%s delivery worker ended (%s); not restarted after %d restarts: /health/live fails",
                name,
                f"{type(exc).__name__}: {exc}" if exc else "returned",
                restarts[name],
            )
            return
        restarts[name] += 1
        metrics.restarts.labels(name).inc()
        log.error(
            "%s delivery worker ended (%s); restarting it (restart %d of %d)",
            name,
            f"{type(exc).__name__}: {exc}" if exc else "returned",
            restarts[name],
            MAX_RESTARTS,
        )
        start(name)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal stopping
        for name in workers:
            start(name)
        try:
            yield
        finally:
            stopping = True
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            intake.shutdown(wait=True)  # a write under way finishes (its sender gets no answer, and retries)

    routes = [
        Route("/v1/alertmanager", endpoint("alertmanager"), methods=["POST"]),
        Route("/v1/grafana", endpoint("grafana"), methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/health/live", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.workers = workers
    app.state.metrics = metrics
    app.state.tasks = tasks
    return app
