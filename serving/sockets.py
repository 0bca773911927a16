"""The listening socket: bound with SO_REUSEPORT so a newer server can join the same port, and a
one-instruction classic BPF program that sends new connections to the newest listener.

Sockets in a reuseport group are indexed in the order they started listening; when one closes,
the last one takes its index. "return 1" therefore picks the second listener, i.e. the newest
while an old and a new server overlap; with a single listener the index is out of range and the
kernel falls back to its usual hash (docs/bundle.md, last section).

Because the newest listener takes every new connection, listening is the deployer's decision:
with ``--await-handover`` a server binds (which takes no connection) and loads, but listens only
on SIGUSR1 (:mod:`serving.handover`), so a server whose deployer died or gave up never steals
production; the deployer finds and stops such servers by their identity (reconciliation).
"""

from __future__ import annotations

import ctypes
import socket
import sys

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant k


class BindError(Exception):
    """The port cannot be bound; the message is one line."""


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEADDR and SO_REUSEPORT, not yet listening."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ]
    except socket.gaierror as exc:
        raise BindError(f"cannot bind {_address(host, port)}: {_reason(exc)}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind {_address(host, port)}: {_reason(exc)}") from None
    return sock


def steer_to_newest(sock: socket.socket) -> None:
    """Attach "return 1" to the socket's reuseport group; raises OSError where unsupported."""
    program = (_SockFilter * 1)(_SockFilter(_BPF_RET_K, 0, 0, 1))
    fprog = _SockFprog(1, program)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))  # `program` is alive here


_TCP_LISTEN = 10  # tcpi_state of a listening socket
_TCPI_UNACKED = 24  # offset of tcpi_unacked in struct tcp_info (linux/tcp.h)


def accept_queue(sock: socket.socket) -> int | None:
    """How many connections wait in a listening socket's accept queue; None where that cannot be read.

    Linux reports it as ``tcpi_unacked`` of ``TCP_INFO`` for a socket in the LISTEN state (what
    ``ss -lnt`` shows as Recv-Q)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):  # closed, not TCP, or no TCP_INFO on this platform
        return None
    if len(info) < _TCPI_UNACKED + 4 or info[0] != _TCP_LISTEN:
        return None
    return int.from_bytes(info[_TCPI_UNACKED : _TCPI_UNACKED + 4], sys.byteorder)
