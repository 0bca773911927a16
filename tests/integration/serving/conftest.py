"""Fixtures for the serving integration tests: real ``python -m serving`` processes.

Each server runs with ``PYTHONPATH`` set to the repository root, ``cwd`` a temp directory and
its stderr in a file; every process a test starts is stopped (SIGTERM, then SIGKILL) when the
test ends. Bundles come from tests/unit/serving/serving_bundles.py, loaded here by path
(so the tests can ``import serving_bundles``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]


def _load_bundles_helper() -> Any:
    name = "serving_bundles"
    if name not in sys.modules:
        path = REPO / "tests" / "unit" / "serving" / "serving_bundles.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bundles = _load_bundles_helper()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    ready_file: Path
    stderr_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        """The ready file's content once written; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.stderr}")
            if self.ready_file.is_file():
                return json.loads(self.ready_file.read_text())
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s: {self.stderr}")

    def wait_exit(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def port() -> int:
    """A port free on 127.0.0.1 right now."""
    return free_port()


@pytest.fixture(scope="session")
def iris_model() -> Any:
    return bundles.train_iris()


@pytest.fixture
def iris_bundle(tmp_path: Path, iris_model: Any) -> Path:
    return bundles.write_bundle(tmp_path / "bundle", iris_model, labels=bundles.IRIS_LABELS)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(bundle, port)`` starts ``python -m serving`` and returns at once."""
    started: list[ServerProcess] = []

    def start(bundle: Path, port: int, *extra: str) -> ServerProcess:
        run_dir = tmp_path / f"server-{len(started)}"
        run_dir.mkdir()
        ready_file = run_dir / "ready.json"
        stderr_file = run_dir / "stderr.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [
            sys.executable,
            "-m",
            "serving",
            str(bundle),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ready-file",
            str(ready_file),
            *extra,
        ]
        with open(stderr_file, "wb") as err:
            proc = subprocess.Popen(argv, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        server = ServerProcess(proc, port, ready_file, stderr_file)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
