"""The predict route as a plain ASGI endpoint, and the app class that serves it first.

``POST /v1/predict`` is the hot path: :class:`ServingApp` hands it straight to the endpoint
(wrapped in the HTTP metrics middleware) without Starlette's middleware stack, router and
Request objects; every other request takes the normal FastAPI path. The endpoint reads the
body (413 past the limit), submits it to the batcher and answers JSON; every error is the
JSON shape of :mod:`serving.errors`, never a traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI

from serving.errors import BadRequest, NotReady, PayloadTooLarge, ServingError, one_line
from serving.jsonio import dumps

log = logging.getLogger("serving")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


_CLOSE = (b"connection", b"close")


async def send_json(send: Any, status: int, body: bytes, headers: dict[str, str] | None = None,
                    close: bool = False) -> None:
    extra = [(k.encode(), v.encode()) for k, v in headers.items()] if headers else []
    if close:
        extra.append(_CLOSE)
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


def error_body(code: str, message: str) -> bytes:
    return dumps({"error": {"code": code, "message": message}})


async def read_body(scope: dict, receive: Any, limit: int) -> bytes:
    """The request body, refused with 413 once it is over ``limit`` bytes (declared or read)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                size = int(value)
            except ValueError:
                raise BadRequest(f"invalid Content-Length {value[:20].decode('latin-1')!r}") from None
            if size > limit:
                raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limit}")
            break
    chunks, total = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class PredictEndpoint:
    """``POST /v1/predict`` as an ASGI app over the serving state and the batcher.

    With ``http`` (the :class:`~serving.middleware.HTTPMetricsMiddleware` of the app) it records
    the HTTP metrics itself and adds ``connection: close`` while draining, as the middleware
    would, without wrapping ``send`` (the fast path); a client that leaves before its body
    arrived counts as status 499."""

    def __init__(self, state: Any, batcher: Any, limit: int, http: Any = None):
        self.state = state
        self.batcher = batcher
        self.limit = limit
        self.http = http

    async def _answer(self, scope: dict, receive: Any) -> tuple[int, bytes, dict[str, str] | None]:
        try:
            if not self.state.ready:
                raise NotReady("the model is not loaded yet")
            for name, value in scope["headers"]:  # JSON only: no form, multipart or compressed bodies
                kind = value.split(b";")[0].strip().lower()
                if (name == b"content-type" and kind and kind != b"application/json" and not kind.endswith(b"+json")) \
                        or (name == b"content-encoding" and kind not in (b"", b"identity")):
                    raise ServingError(f"{name.decode()} {value[:60].decode('latin-1')!r} is not read here; send JSON "
                                       "as application/json, uncompressed", status=415, code="unsupported_media_type")
            predictions = await self.batcher.submit(await read_body(scope, receive, self.limit))
            try:
                return 200, dumps({"predictions": predictions}), None
            except ValueError:
                raise ServingError("the model produced a non-finite value", code="prediction_failed") from None
        except ClientGone:
            return 499, b"", None
        except ServingError as exc:
            return exc.status, error_body(exc.code, exc.message), exc.headers
        except Exception as exc:
            log.error("unhandled error on POST /v1/predict: %s: %s", type(exc).__name__, one_line(exc))
            return 500, error_body("internal_error", "internal server error"), None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        http = self.http
        if http is None:
            status, body, headers = await self._answer(scope, receive)
            if status != 499:
                await send_json(send, status, body, headers)
            return
        start = time.perf_counter()
        http.in_flight.inc()
        status = 500
        try:
            status, body, headers = await self._answer(scope, receive)
            if status != 499:
                await send_json(send, status, body, headers, close=self.state.draining)
        finally:
            http.in_flight.dec()
            http.observe(scope, status, time.perf_counter() - start)


class ServingApp(FastAPI):
    """A FastAPI app whose ``fast_routes`` ({(method, path): asgi_app}) skip the middleware stack."""

    fast_routes: dict[tuple[str, str], Any]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            handler = self.fast_routes.get((scope["method"], scope["path"]))
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
