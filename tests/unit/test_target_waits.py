"""The local target's waits (mlops_cli.targets): a process's end seen on a pidfd, and who answers
/health/ready (a real HTTP server on 127.0.0.1, real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops_cli.targets import ready_identity, wait_for_exit


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here: the wait returns at once, callers poll")
def test_wait_for_exit_returns_when_the_process_ends() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    try:
        wait_for_exit(proc.pid, 30)
        assert proc.poll() is not None  # it ended (the wait did not run out: 30 s)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here: the wait returns at once, callers poll")
def test_wait_for_exit_of_a_process_that_does_not_end_waits_for_the_timeout() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = time.monotonic()
        wait_for_exit(proc.pid, 0.2)
        assert proc.poll() is None and time.monotonic() - started >= 0.15
    finally:
        proc.kill()
        proc.wait()


def test_wait_for_exit_of_a_pid_that_is_gone_returns_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names nothing
    started = time.monotonic()
    wait_for_exit(proc.pid, 30)
    assert time.monotonic() - started < 20


class _Ready(BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b"{}")

    def do_GET(self) -> None:
        status, body = self.answer if self.path == "/health/ready" else (404, b"{}")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ready_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _answering(server: ThreadingHTTPServer, status: int, body: object) -> str | None:
    _Ready.answer = (status, json.dumps(body).encode() if not isinstance(body, bytes) else body)
    return ready_identity(f"http://127.0.0.1:{server.server_address[1]}")


def test_ready_identity_is_the_instance_or_the_pid(ready_server) -> None:
    assert _answering(ready_server, 200, {"status": "ready", "pid": 42, "instance": "abc"}) == "abc"
    assert _answering(ready_server, 200, {"status": "ready", "pid": 42}) == "pid:42"


def test_ready_identity_is_none_unless_a_ready_server_of_ours_answers(ready_server) -> None:
    assert _answering(ready_server, 503, {"error": {"code": "draining"}, "pid": 42}) is None
    assert _answering(ready_server, 200, b"not json") is None
    assert _answering(ready_server, 200, ["a", "list"]) is None
    assert _answering(ready_server, 200, {"status": "ready"}) is None
    port = ready_server.server_address[1]
    ready_server.shutdown()
    ready_server.server_close()
    assert ready_identity(f"http://127.0.0.1:{port}", timeout=2) is None  # nothing listens
