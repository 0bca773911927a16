"""The drain-until-idle decision of ServingServer (serving.server), on real sockets without a server:
a stop ends the drain only once no connection is open and none waits in the listener's accept queue."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from types import SimpleNamespace

import pytest
import uvicorn

from serving.server import IDLE_DRAIN_MIN_SECONDS, IDLE_SETTLE_SECONDS, ServingServer
from serving.sockets import bind_listener

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the accept queue is read from TCP_INFO")


async def _no_app(scope, receive, send) -> None:  # never called: no request reaches it
    raise AssertionError("no request expected")


def draining_server(listener: socket.socket, *, until_idle: bool = True) -> ServingServer:
    state = SimpleNamespace(draining=False, load_error=None)
    state.start_draining = lambda: setattr(state, "draining", True)
    server = ServingServer(
        uvicorn.Config(_no_app, log_config=None),
        state,
        drain_seconds=30.0,
        ready_file=None,
        ready_info={},
        drain_until_idle=until_idle,
    )
    server.steered = True  # as after steer_to_newest on a real listener
    server.listeners = [listener]
    server.handle_exit(signal.SIGTERM, None)
    return server


def ticks(server: ServingServer, seconds: float) -> bool:
    """on_tick every few ms for `seconds`; whether the server decided to stop."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not server.should_exit:
        asyncio.run(server.on_tick(1))
        time.sleep(0.002)
    return server.should_exit


@pytest.fixture
def listener():
    sock = bind_listener("127.0.0.1", 0)
    sock.listen()
    yield sock
    sock.close()


def test_a_connection_in_the_accept_queue_keeps_it_draining(listener) -> None:
    server = draining_server(listener)
    client = socket.create_connection(listener.getsockname(), timeout=2)  # queued, not accepted
    try:
        assert not ticks(server, IDLE_DRAIN_MIN_SECONDS * 2)  # longer than every idle threshold
        conn, _ = listener.accept()
        conn.close()
        assert ticks(server, 5.0)  # the queue is empty, nothing open: it stops
        assert server.drained_idle
    finally:
        client.close()


def test_an_open_connection_keeps_it_draining(listener) -> None:
    server = draining_server(listener)
    server.server_state.connections.add(object())  # what uvicorn registers per open connection
    assert not ticks(server, IDLE_DRAIN_MIN_SECONDS * 2)
    server.server_state.connections.clear()
    assert ticks(server, 5.0) and server.drained_idle


def test_idle_means_idle_for_the_settle_time(listener) -> None:
    server = draining_server(listener)
    asyncio.run(server.on_tick(1))  # idle from now on
    assert not server.should_exit  # not at the first look
    assert ticks(server, 5.0) and server.drained_idle
    assert time.monotonic() - (server.idle_since or 0) >= IDLE_SETTLE_SECONDS


def test_without_drain_until_idle_it_waits_for_the_deadline(listener) -> None:
    server = draining_server(listener, until_idle=False)
    assert not ticks(server, IDLE_DRAIN_MIN_SECONDS * 2)
    assert not server.drained_idle
