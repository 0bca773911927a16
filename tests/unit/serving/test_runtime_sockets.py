"""The listening socket: SO_REUSEPORT sharing, a clear bind error, and the BPF program that
sends new connections to the newest listener (real sockets on 127.0.0.1, no servers)."""

from __future__ import annotations

import socket
import sys

import pytest

from serving.sockets import BindError, accept_queue, bind_listener, steer_to_newest


def _accepting(listeners: list[socket.socket], connections: int) -> list[int]:
    """Open ``connections`` and count, per listener, how many it accepted."""
    port = listeners[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(connections)]
    counts = []
    for listener in listeners:
        listener.setblocking(False)
        n = 0
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            conn.close()
            n += 1
        counts.append(n)
    for c in clients:
        c.close()
    return counts


def test_two_servers_can_bind_the_same_port() -> None:
    first = bind_listener("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = bind_listener("127.0.0.1", port)
    try:
        assert second.getsockname() == ("127.0.0.1", port)
    finally:
        first.close()
        second.close()


def test_a_port_held_without_reuseport_is_a_bind_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BindError) as err:
            bind_listener("127.0.0.1", port)
    assert str(err.value) == f"cannot bind 127.0.0.1:{port}: address already in use"


def test_an_unknown_host_is_a_bind_error() -> None:
    with pytest.raises(BindError, match=r"^cannot bind no-such-host\.invalid:8080: "):
        bind_listener("no-such-host.invalid", 8080)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_ATTACH_REUSEPORT_CBPF is Linux-only")
def test_new_connections_go_to_the_newest_listener() -> None:
    old = bind_listener("127.0.0.1", 0)
    old.listen()
    steer_to_newest(old)  # alone in the group: index 1 is out of range, the kernel hashes
    assert _accepting([old], 4) == [4]
    new = bind_listener("127.0.0.1", old.getsockname()[1])
    new.listen()
    try:
        assert _accepting([old, new], 20) == [0, 20]
    finally:
        old.close()
    try:  # once the old one has gone, the new one is alone and takes everything
        assert _accepting([new], 4) == [4]
    finally:
        new.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the accept queue is read from Linux's TCP_INFO")
def test_accept_queue_counts_connections_not_yet_accepted() -> None:
    listener = bind_listener("127.0.0.1", 0)
    try:
        assert accept_queue(listener) is None  # bound, not listening: no queue to read
        listener.listen()
        assert accept_queue(listener) == 0
        clients = [socket.create_connection(listener.getsockname(), timeout=2) for _ in range(3)]
        assert accept_queue(listener) == 3  # the handshake completes in the kernel, before accept()
        conn, _ = listener.accept()
        assert accept_queue(listener) == 2
        conn.close()
        for c in clients:
            c.close()
    finally:
        listener.close()
    assert accept_queue(listener) is None  # closed
