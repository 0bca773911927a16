"""The predict route as a plain ASGI endpoint, and the app class that serves it first.

``POST /v1/predict`` is the hot path: :class:`ServingApp` hands it straight to the endpoint
(wrapped in the HTTP metrics middleware) without Starlette's middleware stack, router and
Request objects; every other request takes the normal FastAPI path. The endpoint reads the
body (413 past the limit), submits it to the batcher and answers JSON; every error is the
JSON shape of :mod:`serving.errors`, never a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI

from serving.errors import BadRequest, NotReady, PayloadTooLarge, ServingError, one_line

log = logging.getLogger("serving")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


async def send_json(send: Any, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
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
    """``POST /v1/predict`` as an ASGI app over the serving state and the batcher."""

    def __init__(self, state: Any, batcher: Any, limit: int):
        self.state = state
        self.batcher = batcher
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            if not self.state.ready:
                raise NotReady("the model is not loaded yet")
            predictions = await self.batcher.submit(await read_body(scope, receive, self.limit))
            try:
                body = dumps({"predictions": predictions})
            except ValueError:
                raise ServingError("the model produced a non-finite value", code="prediction_failed") from None
        except ClientGone:
            return
        except ServingError as exc:
            await send_json(send, exc.status, error_body(exc.code, exc.message), exc.headers)
            return
        except Exception as exc:
            log.error("unhandled error on POST /v1/predict: %s: %s", type(exc).__name__, one_line(exc))
            await send_json(send, 500, error_body("internal_error", "internal server error"))
            return
        await send_json(send, 200, body)


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
