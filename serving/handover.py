"""The handover gate: a server that loads its model, says so, and listens only when told.

``python -m serving ... --await-handover`` loads and verifies the model (the app's lifespan),
writes the ready file as ``{"pid", "instance", "revision", "sha256", "listening": false}`` and then
waits for ``SIGUSR1`` before it listens. A deployer therefore decides when a new revision takes
connections: a server whose deployer died or gave up never listens, so it can never take
production's connections from the revision that serves (the reuseport group steers new
connections to its newest listener, :mod:`serving.sockets`). A ``SIGTERM``/``SIGINT`` before the
handover (while loading or waiting) stops the server without it ever listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.05  # how often the wait looks for a stop (SIGUSR1 itself wakes it at once)


class StoppedBeforeServing(Exception):
    """A stop was asked for before the server listened; it exits without taking a connection."""


class Handover:
    """Written into ``ServingState.handover`` by ``python -m serving``; awaited by the lifespan."""

    def __init__(self, ready_file: Path | None, info: dict[str, Any]):
        self.ready_file = ready_file
        self.info = info
        self.go = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._told = asyncio.Event()

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, self._go)

    def _go(self, signum: int, frame: Any) -> None:
        self.go = True
        if self._loop is not None:  # wake the wait now (the handler runs between the loop's steps)
            with contextlib.suppress(RuntimeError):  # the loop closed (a late signal): nothing to wake
                self._loop.call_soon_threadsafe(self._told.set)

    async def wait(self, state: Any) -> None:
        """Announce "loaded, not listening", then wait for SIGUSR1; raise if a stop comes first."""
        if self.ready_file is not None:
            tmp = self.ready_file.with_name(f".{self.ready_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**self.info, "listening": False}) + "\n", encoding="utf-8")
            os.replace(tmp, self.ready_file)
        self._loop = asyncio.get_running_loop()
        while not self.go:
            if state.draining:
                raise StoppedBeforeServing("stopped before it listened (a stop signal came during the handover wait)")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._told.wait(), POLL_SECONDS)
