"""HTTP metrics and the draining header, as a plain ASGI middleware.

Plain ASGI on purpose: ``@app.middleware("http")`` (BaseHTTPMiddleware) costs a third or more
of the throughput. The route label is the route template (the app's route paths, looked up
exactly, then a ``route`` the router put in the scope), or ``other`` for paths no route
serves, so label cardinality stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from serving.metrics import Metrics

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CLOSE = (b"connection", b"close")


class HTTPMetricsMiddleware:
    """Counts, times and gauges every HTTP request; while ``state.draining`` every response
    carries ``connection: close`` so keep-alive clients reconnect (to the newer listener)."""

    def __init__(self, app: Any, metrics: Metrics, state: Any, templates: Iterable[str] = ()):
        self.app = app
        self.templates = {t: t for t in templates}
        self.metrics = metrics
        self.state = state
        self.in_flight = metrics.http_in_flight
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts, the request failed
        state = self.state

        async def send_and_watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if state.draining:
                    message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        in_flight = self.metrics.http_in_flight
        in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            elapsed = time.perf_counter() - start
            in_flight.dec()
            self.observe(scope, status, elapsed)

    def observe(self, scope: dict, status: int, elapsed: float) -> None:
        """Count and time one answered request."""
        template = self.templates.get(scope["path"]) or getattr(scope.get("route"), "path", None) or "other"
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            series = (
                self.metrics.http_requests.labels(route=template, method=method, status=str(status)),
                self.metrics.http_duration.labels(route=template, method=method),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(elapsed)
