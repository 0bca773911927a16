"""Admission control for request bodies: a byte budget shared by every predict request in flight.

A request reserves its body's size (its ``Content-Length``, or chunk by chunk when the body is
chunked) before the body is read, raises its reservation to its answer's size when that is
larger, and gives it back once its answer has left the process (written to the socket, not just
handed to the transport: a client that does not read cannot pile up answers in memory). While the
reservations add up to more than ``server.max_inflight_bytes`` a new request is shed at once:
``503 overloaded`` with ``Retry-After``, answered before its body is read; the connection stays
open and the rest of the body is dropped as it arrives (nothing buffered), so a client that
keeps its connection alive reads the 503 once it has sent its body. The server's
memory therefore stays near ``baseline + max_inflight_bytes x multiplier`` (docs/bundle.md,
"Limits"; bench/memory.py measures the multiplier) whatever the number of clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from serving.errors import ServingError


class Shed(ServingError):
    """503: the in-flight byte budget is spent; the body is dropped, the client should retry."""

    status, code = 503, "overloaded"
    headers: ClassVar[Mapping[str, str] | None] = {"retry-after": "1"}


class ByteBudget:
    """Bytes reserved by requests in flight, up to ``limit``. Used on the event loop only."""

    def __init__(self, limit: int, rejected: object = None):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._rejected = rejected  # a counter with .inc(), shed requests are counted there

    def acquire(self, size: int) -> None:
        """Reserve ``size`` bytes or raise :class:`Shed`."""
        if self.used + size > self.limit:
            if self._rejected is not None:
                self._rejected.inc()  # type: ignore[attr-defined]
            raise Shed(
                f"the server is at capacity ({self.used} request bytes in flight, limit {self.limit}); retry shortly"
            )
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def force(self, size: int) -> None:
        """Reserve ``size`` more bytes whatever the budget (an answer larger than its body):
        new requests are shed until they are released."""
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def release(self, size: int) -> None:
        self.used -= size
