"""The HTTP connection guard: uvicorn's httptools protocol with limits a public server needs.

uvicorn alone bounds none of these: a client that connects and sends nothing, or sends its
headers or body a byte at a time (slowloris), holds a connection for ever; headers may be as many
and as large as a client likes; connections are accepted without limit. Per connection this
protocol adds (all from ``spec.server``, docs/bundle.md "Limits"):

- ``idle_timeout_seconds``: a connection with no request in progress (just opened, or kept alive
  after a response) is closed after this long (uvicorn's keep-alive timer, also armed on connect);
- ``header_timeout_seconds``: from a request's first byte its request line and headers must be
  complete within this long, else ``408`` and close;
- ``body_timeout_seconds``: from the end of the headers the body must be complete within this
  long, else ``408`` and close (the app sees the client leave); and a client that reads nothing
  of its answer for this long is cut off (the predict route keeps the answer's bytes in the
  in-flight budget until they leave the process: ``scope["mlops.flushed"]()`` returns None or
  something to await);
- ``max_header_bytes`` / ``max_headers``: request line plus headers over either limit is
  answered ``431`` and the connection closed, before the app sees the request;
- ``max_connections``: a connection beyond this many open ones is answered ``503`` with
  ``Retry-After`` and closed at once.

Refusals are JSON ``{"error": {"code", "message"}}`` like every other error of the server. The
header and body deadlines are timestamps checked by one sweep per server (every quarter of the
shorter timeout, at most every second), not a timer per request: the hot path pays a clock read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from time import monotonic as _monotonic
from typing import Any

log = logging.getLogger("serving")

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency of the runtime
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    max_header_bytes: int = 16_384
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    @classmethod
    def of(cls, server: Any) -> ConnectionLimits:
        """The limits of a :class:`serving.spec.ServerSpec`."""
        return cls(
            max_connections=server.max_connections,
            max_header_bytes=server.max_header_bytes,
            max_headers=server.max_headers,
            header_timeout=server.header_timeout_seconds,
            body_timeout=server.body_timeout_seconds,
        )


def refusal(status: int, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    head = [
        b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    if retry_after is not None:
        head.append(b"retry-after: %d" % retry_after)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request we refuse."""


def protocol_class(limits: ConnectionLimits) -> type:
    """A uvicorn ``http`` protocol class enforcing ``limits`` (uvicorn builds one per connection)."""
    if HttpToolsProtocol is None:  # pragma: no cover
        raise RuntimeError("the serving runtime needs httptools (pip install httptools)")

    class GuardedProtocol(_GuardedBase):
        pass

    GuardedProtocol.limits = limits
    GuardedProtocol.sweep_every = max(0.05, min(1.0, limits.header_timeout / 4, limits.body_timeout / 4))
    return GuardedProtocol


class _GuardedBase(HttpToolsProtocol):
    limits: ConnectionLimits = ConnectionLimits()
    sweep_every = 1.0  # how often the deadlines of all connections are checked (one timer per server)
    _last_warning = float("-inf")
    _sweeping = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = 0.0  # time.monotonic() by which the headers or body being read must be complete
        self._reading = ""  # "headers", "body", or "" (no request being read)
        self._in_headers = False
        self._pending_bytes = 0  # bytes received while the header block was incomplete
        self._chunk = 0  # size of the chunk being parsed
        self._refusal: bytes | None = None
        self._flushed_hook = self._flush_waiter  # one bound method per connection, not per request

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            now = self.loop.time()
            if now - _GuardedBase._last_warning >= 10:  # one line per 10 s, not one per connection
                _GuardedBase._last_warning = now
                log.warning(
                    "refusing connections: %d open, the limit is %d (server.max_connections)",
                    len(self.connections) - 1,
                    self.limits.max_connections,
                )
            self._refuse(
                refusal(
                    503,
                    "too_many_connections",
                    f"the server holds {self.limits.max_connections} connections; retry shortly",
                    retry_after=1,
                )
            )
            return
        # until the first byte arrives the connection is idle: uvicorn's keep-alive timer covers
        # that after a response; arm it for a fresh connection too (data_received cancels it)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        if not type(self)._sweeping:
            type(self)._sweeping = True
            self.loop.call_later(self.sweep_every, type(self)._sweep, self.loop, self.connections)

    @classmethod
    def _sweep(cls, loop: Any, connections: set) -> None:
        """Close the connections whose headers or body are late (no timer per request: cheaper)."""
        now = _monotonic()
        for conn in [c for c in connections if getattr(c, "_reading", "") and c._deadline <= now]:
            conn._timed_out()
        loop.call_later(cls.sweep_every, cls._sweep, loop, connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        self._chunk = len(data)
        super().data_received(data)
        if self._in_headers and self._refusal is None:
            # bytes of a header block not complete yet: httptools buffers a partial header in memory
            self._pending_bytes += len(data)
            if self._pending_bytes > self.limits.max_header_bytes:
                self._too_large_headers()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # a callback of ours stopped the parser: answer our way
            self._write_refusal()
        else:
            super().send_400_response(msg)

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["mlops.flushed"] = self._flushed_hook  # type: ignore[typeddict-unknown-key]
        self._in_headers = True
        self._pending_bytes = 0
        self._reading, self._deadline = "headers", _monotonic() + self.limits.header_timeout

    def on_headers_complete(self) -> None:
        # checked once the block is parsed (no callback per header on the hot path): the block
        # cannot be over max_header_bytes when all bytes received for it are not
        limits = self.limits
        if len(self.headers) > limits.max_headers or (
            self._pending_bytes + self._chunk > limits.max_header_bytes
            and len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > limits.max_header_bytes
        ):
            self._too_large_headers(stop=True)
        self._in_headers = False
        self._reading, self._deadline = "body", _monotonic() + limits.body_timeout
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _flush_waiter(self) -> Any:
        """None when what was written has left the process, else an awaitable that waits for it
        (a plain call on the hot path, no coroutine unless there is something to wait for)."""
        if not self.flow.write_paused or self.transport.is_closing():
            return None
        return self._flushed()

    async def _flushed(self) -> None:
        """Wait until what was written has left the process (or the connection closed): the
        predict route holds its bytes in the in-flight budget until then. A client that reads
        nothing of it for ``body_timeout`` is cut off, so it cannot hold the budget."""
        if not self.flow.write_paused or self.transport.is_closing():
            return
        try:
            await asyncio.wait_for(self.flow.drain(), self.limits.body_timeout)
        except asyncio.TimeoutError:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.info(
                "closed the connection of %s: it read nothing of its answer for %gs", client, self.limits.body_timeout
            )
            self.transport.abort()  # close() would keep the unsent answer in memory until sent

    # -- helpers -----------------------------------------------------------------------------
    def _too_large_headers(self, stop: bool = False) -> None:
        self._refusal = refusal(
            431,
            "headers_too_large",
            f"request headers over the limit ({self.limits.max_headers} headers, {self.limits.max_header_bytes} bytes)",
        )
        if stop:
            raise _Refused()  # httptools stops; uvicorn calls send_400_response, answered above
        self._write_refusal()

    def _refuse(self, response: bytes) -> None:
        self._refusal = response
        self._write_refusal()

    def _write_refusal(self) -> None:
        self._disarm()
        self._unset_keepalive_if_required()
        if not self.transport.is_closing():
            assert self._refusal is not None
            self.transport.write(self._refusal)
            self.transport.close()

    def _disarm(self) -> None:
        self._reading = ""

    def _timed_out(self) -> None:
        what = self._reading
        self._reading = ""
        if self.transport.is_closing():
            return
        seconds = self.limits.header_timeout if what == "headers" else self.limits.body_timeout
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closed the connection of %s: its request %s took over %gs", client, what, seconds)
        cycle = self.cycle
        if what == "headers" or cycle is None or not cycle.response_started:
            self._refusal = refusal(408, "request_timeout", f"the request {what} did not arrive within {seconds:g}s")
            self._write_refusal()
        else:
            self.transport.close()


__all__ = ["ConnectionLimits", "httptools", "protocol_class", "refusal"]
