"""The predict route as a plain ASGI endpoint, and the app class that serves it first.

``POST /v1/predict`` is the hot path: :class:`ServingApp` hands it straight to the endpoint
(wrapped in the HTTP metrics middleware) without Starlette's middleware stack, router and
Request objects; every other request takes the normal Starlette path. The endpoint reads the
body (413 past the limit), submits it to the batcher and answers JSON; every error is the
JSON shape of :mod:`serving.errors`, never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from starlette.applications import Starlette

from serving.admission import ByteBudget
from serving.errors import BadRequest, NotReady, PayloadTooLarge, ServingError, one_line
from serving.jsonio import dumps

log = logging.getLogger("serving")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


_CLOSE = (b"connection", b"close")


async def send_json(
    send: Any, status: int, body: bytes, headers: Mapping[str, str] | None = None, close: bool = False
) -> None:
    extra = [(k.encode(), v.encode()) for k, v in headers.items()] if headers else []
    if close:
        extra.append(_CLOSE)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_body(code: str, message: str) -> bytes:
    return dumps({"error": {"code": code, "message": message}})


def declared_length(scope: dict, limit: int) -> int | None:
    """The request's Content-Length, None when it has none; 400 if malformed, 413 over ``limit``."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                size = int(value)
            except ValueError:
                raise BadRequest(f"invalid Content-Length {value[:20].decode('latin-1')!r}") from None
            if size > limit:
                raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limit}")
            return size
    return None


async def read_body(
    scope: dict, receive: Any, limit: int, budget: ByteBudget | None = None, held: list[int] | None = None
) -> bytes | bytearray:
    """The request body, refused with 413 once it is over ``limit`` bytes (declared or read).

    With ``budget``, its bytes are reserved before they are read (all at once when the length is
    declared, else chunk by chunk) and added to ``held[0]``: the caller releases them once the
    answer is sent; :class:`~serving.admission.Shed` (503) when the budget is spent. A declared
    body that arrives in several chunks is copied into one buffer of its size (no list of chunks
    joined at the end: one copy of the body in memory, not two)."""
    size = declared_length(scope, limit)
    if size is not None and budget is not None:
        budget.acquire(size)
        held[0] += size  # type: ignore[index]
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone()
    first = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one chunk, no copy
        if len(first) > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        if size is None and budget is not None:
            budget.acquire(len(first))
            held[0] += len(first)  # type: ignore[index]
        return first
    if size is not None:
        buffer = bytearray(size)
        view = memoryview(buffer)
        end = 0
        chunk = first
        while True:
            if end + len(chunk) > size:
                raise BadRequest(f"request body is longer than its Content-Length {size}")
            view[end : end + len(chunk)] = chunk
            end += len(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
        view.release()
        if end != size:
            raise BadRequest(f"request body is {end} bytes, its Content-Length says {size}")
        return buffer
    chunks, total = [], 0
    chunk = first
    while True:
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        if budget is not None:
            budget.acquire(len(chunk))
            held[0] += len(chunk)  # type: ignore[index]
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")


class PredictEndpoint:
    """``POST /v1/predict`` as an ASGI app over the serving state and the batcher.

    With ``http`` (the :class:`~serving.middleware.HTTPMetricsMiddleware` of the app) it records
    the HTTP metrics itself and adds ``connection: close`` while draining, as the middleware
    would, without wrapping ``send`` (the fast path); a client that leaves before its body
    arrived counts as status 499. With ``budget`` (a :class:`~serving.admission.ByteBudget`)
    each request holds its body's bytes in the budget until its answer is sent."""

    def __init__(self, state: Any, batcher: Any, limit: int, http: Any = None, budget: ByteBudget | None = None):
        self.state = state
        self.batcher = batcher
        self.limit = limit
        self.http = http
        self.budget = budget

    async def _answer(self, scope: dict, receive: Any, held: list[int]) -> tuple[int, bytes, Mapping[str, str] | None]:
        try:
            if not self.state.ready:
                raise NotReady("the model is not loaded yet")
            for name, value in scope["headers"]:  # JSON only: no form, multipart or compressed bodies
                kind = value.split(b";")[0].strip().lower()
                if (
                    name == b"content-type" and kind and kind != b"application/json" and not kind.endswith(b"+json")
                ) or (name == b"content-encoding" and kind not in (b"", b"identity")):
                    raise ServingError(
                        f"{name.decode()} {value[:60].decode('latin-1')!r} is not read here; send JSON "
                        "as application/json, uncompressed",
                        status=415,
                        code="unsupported_media_type",
                    )
            predictions = await self.batcher.submit(await read_body(scope, receive, self.limit, self.budget, held))
            try:
                answer = dumps({"predictions": predictions})
            except ValueError:
                raise ServingError("the model produced a non-finite value", code="prediction_failed") from None
            if held[0] and len(answer) > held[0]:  # the answer is held until sent: count it
                self.budget.force(len(answer) - held[0])  # type: ignore[union-attr]
                held[0] = len(answer)
            return 200, answer, None
        except ClientGone:
            return 499, b"", None
        except ServingError as exc:  # a Shed (503) too: answered before its body is read, the connection
            # kept; uvicorn drops the rest of the body as it arrives and the client reads its 503
            return exc.status, error_body(exc.code, exc.message), exc.headers
        except Exception as exc:
            log.error("unhandled error on POST /v1/predict: %s: %s", type(exc).__name__, one_line(exc))
            return 500, error_body("internal_error", "internal server error"), None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        http = self.http
        held = [0]
        try:
            if http is None:
                status, body, headers = await self._answer(scope, receive, held)
                if status != 499:
                    await send_json(send, status, body, headers)
                return
            start = time.perf_counter()
            http.in_flight.inc()
            status = 500
            try:
                status, body, headers = await self._answer(scope, receive, held)
                if status != 499:
                    await send_json(send, status, body, headers, close=self.state.draining)
            finally:
                http.in_flight.dec()
                http.observe(scope, status, time.perf_counter() - start)
        finally:
            if held[0]:
                try:
                    hook = scope.get("mlops.flushed")  # serving.protocol: None once the answer left the process
                    waiter = hook() if hook is not None else None
                    if waiter is not None:
                        await waiter
                finally:
                    self.budget.release(held[0])  # type: ignore[union-attr]


class ServingApp(Starlette):
    """A Starlette app whose ``fast_routes`` ({(method, path): asgi_app}) skip the middleware stack.

    Starlette, not FastAPI: every route is a plain Starlette route or ASGI endpoint and the OpenAPI
    document is our own, so FastAPI would only cost its import (~0.3 s of the server's start-up)."""

    fast_routes: dict[tuple[str, str], Any]

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            handler = self.fast_routes.get((scope["method"], scope["path"]))
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
