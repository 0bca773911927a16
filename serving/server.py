"""Runs the app with uvicorn on a socket we bound, and hands the port over gracefully.

Order of events: the lifespan loads and verifies the model (uvicorn runs it before listening);
uvicorn listens on our socket; we steer new connections to the newest listener and write the
ready file. On the first SIGTERM/SIGINT the server drains: ``/health/ready`` answers 503 and
every response carries ``connection: close``; after ``drain_seconds`` uvicorn stops accepting,
finishes in-flight requests and exits. With ``drain_until_idle`` (``--drain-until-idle``: the
local and container targets, whose newer server has taken the port over before the old one is
told to stop) the drain ends as soon as the server is idle, at the latest after
``drain_seconds``: no connection open and none waiting in the listener's accept queue (Linux
``TCP_INFO``; connections queued on the old listener get accepted and answered first), seen
that way for ``IDLE_SETTLE_SECONDS`` (checked every ``DRAIN_TICK_SECONDS``, so a connection
taken from the queue but not yet handed to its protocol by the event loop is seen too); where
the queue cannot be read, no earlier than ``IDLE_DRAIN_MIN_SECONDS``. A second signal stops at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from serving.protocol import ConnectionLimits, protocol_class
from serving.sockets import accept_queue, steer_to_newest
from serving.spec import ServerSpec

log = logging.getLogger("serving")
GRACEFUL_TIMEOUT_SECONDS = 30  # in-flight requests get this long once the listener is closed
IDLE_DRAIN_MIN_SECONDS = 0.1  # an idle drain lasts at least this where the accept queue cannot be read
IDLE_SETTLE_SECONDS = 0.02  # ... else it must have been idle for this long (several checks, loop turns between)
DRAIN_TICK_SECONDS = 0.005  # how often a drain until idle looks (uvicorn's own tick: 0.1 s)
UVICORN_TICK_SECONDS = 0.1


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """Write JSON atomically: a temp file in the same directory, then os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def remove_ready_file(path: Path) -> None:
    """Remove the ready file if it is still ours (a newer server may have written the same path)."""
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


class _HideFailedStartup(logging.Filter):
    """uvicorn logs a failed startup as a traceback; ``python -m serving`` prints one line instead."""

    def __init__(self, state: Any):
        super().__init__()
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        return self.state.load_error is None


class ServingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        state: Any,
        *,
        drain_seconds: float,
        ready_file: Path | None,
        ready_info: dict[str, Any],
        drain_until_idle: bool = False,
    ):
        super().__init__(config)
        self.state = state
        self.drain_seconds = drain_seconds
        self.drain_until_idle = drain_until_idle
        self.steered = False  # new connections go to the newest listener (not shared by hash)
        self.drain_started: float | None = None
        self.ready_file = ready_file
        self.ready_info = ready_info
        self.drain_deadline: float | None = None
        self.listeners: list[socket.socket] = []
        self.idle_since: float | None = None
        self.drained_idle = False  # the drain ended because nothing was left to wait for
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wake = asyncio.Event()  # a signal cuts the main loop's tick short

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)  # lifespan (model load), then listen
        # Everything loaded so far (the model, numpy, scikit-learn) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise stall requests for tens of ms.
        # `python -m serving` runs its imports and the model load with the collector off (faster);
        # the cyclic garbage they left is frozen with the rest rather than collected here (a full
        # collection costs 35-65 ms of the start-up): ~2,000 objects, ~0.5 MB for the benchmark
        # bundle, mostly import-time classes and functions; a model load that makes much more
        # cyclic garbage would keep it too.
        gc.freeze()
        gc.enable()
        self.listeners = list(sockets or [])
        for sock in sockets or []:
            try:
                steer_to_newest(sock)
                self.steered = True
            except OSError as exc:
                log.warning(
                    "cannot steer new connections to the newest listener (%s); "
                    "a replacement server will share connections by hash",
                    exc,
                )
        info = self.ready_info
        log.info(
            "serving on http://%s:%d (pid %d, sha256 %s…)",
            info["host"],
            info["port"],
            info["pid"],
            str(info["sha256"])[:12],
        )
        if self.ready_file is not None and not self.state.draining:
            write_ready_file(self.ready_file, info)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is None and not self.should_exit:
            self.state.start_draining()
            self.drain_started = time.monotonic()
            self.drain_deadline = self.drain_started + self.drain_seconds
            log.info(
                "%s: draining for %.1fs%s, then stopping",
                signal.Signals(sig).name,
                self.drain_seconds,
                " at most (until no connection is open)" if self._idle_drain() else "",
            )
        else:
            log.info("%s again: stopping now", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
        if self.loop is not None:  # the main loop looks now, not at the end of its tick
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to wake
                self.loop.call_soon_threadsafe(self.wake.set)

    def _idle_drain(self) -> bool:
        # only where a newer listener takes every new connection: with connections shared by hash, an
        # idle moment says nothing about the next connection, which would be refused once we stop
        return self.drain_until_idle and self.steered

    async def main_loop(self) -> None:
        """uvicorn's main loop (a tick every 0.1 s: the date header, the exit check), with ticks of
        DRAIN_TICK_SECONDS while draining until idle, and woken at once by a stop signal."""
        self.loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            fast = self.drain_deadline is not None and self._idle_drain()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), DRAIN_TICK_SECONDS if fast else UVICORN_TICK_SECONDS)
            self.wake.clear()
            should_exit = await self.on_tick(counter)

    def _idle(self) -> bool | None:
        """No connection open and none queued: True/False; None when the accept queue cannot be read."""
        if self.server_state.connections:
            return False
        queued = [accept_queue(sock) for sock in self.listeners]
        if any(queued):
            return False
        return None if None in queued else True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            now = time.monotonic()
            started = self.drain_started if self.drain_started is not None else now
            idle = self._idle() if self._idle_drain() else False
            if now >= self.drain_deadline:
                self.should_exit = True
            elif idle is False:
                self.idle_since = None
            else:  # idle (True), or no connection and the queue unknown (None)
                self.idle_since = now if self.idle_since is None else self.idle_since
                settled = now - self.idle_since >= IDLE_SETTLE_SECONDS
                if settled and (idle or now - started >= IDLE_DRAIN_MIN_SECONDS):
                    log.info("drained: no connection open after %.2fs", now - started)
                    self.should_exit = self.drained_idle = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.drained_idle or self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets=sockets)
            return
        # Drained until idle: nothing to ask to close or to wait for (uvicorn's own shutdown sleeps
        # 0.1 s for the connections it asked to close). The same steps otherwise.
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


def serve(
    app: Any,
    sock: socket.socket,
    *,
    host: str,
    log_level: int,
    drain_seconds: float,
    sha256: str,
    ready_file: Path | None = None,
    limits: Any = None,
    drain_until_idle: bool = False,
) -> int:
    """Serve ``app`` on the bound ``sock`` until stopped; 0 after a clean stop, 1 if startup failed.

    ``limits`` (the spec's ``server`` section, :class:`serving.spec.ServerSpec`) sets the
    connection guard (:mod:`serving.protocol`): idle, header and body timeouts, header limits
    and the connection cap; its defaults apply without it."""
    state = app.state.serving
    limits = limits if limits is not None else ServerSpec()
    config = uvicorn.Config(
        app,
        http=protocol_class(ConnectionLimits.of(limits)),
        timeout_keep_alive=limits.idle_timeout_seconds,
        lifespan="on",
        log_config=None,
        log_level=None,
        access_log=log_level <= logging.DEBUG,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT_SECONDS,
    )
    port = sock.getsockname()[1]
    info = {"pid": os.getpid(), "host": host, "port": port, "sha256": sha256}
    server = ServingServer(
        config,
        state,
        drain_seconds=drain_seconds,
        ready_file=ready_file,
        ready_info=info,
        drain_until_idle=drain_until_idle,
    )
    quiet = _HideFailedStartup(state)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(quiet)
    try:
        server.run(sockets=[sock])
    except SystemExit:
        if state.load_error is None:
            raise
    finally:
        uvicorn_log.removeFilter(quiet)
        sock.close()
        if ready_file is not None:
            remove_ready_file(ready_file)
    if state.load_error is not None:
        return 1
    log.info("stopped (pid %d)", os.getpid())
    return 0
