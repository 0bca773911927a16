"""A real Prometheus (Debian's `prometheus`) for the tests: started on a free 127.0.0.1 port, stopped by its caller."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import IO

import httpx
from helpers import free_port


def start_prometheus(binary: str, config_file: Path, workdir: Path) -> tuple[subprocess.Popen, IO[bytes], str]:
    """Prometheus with config_file and its TSDB and log in workdir, ready (at most 60 s): (process, log, URL)."""
    port = free_port()
    log_path = workdir / "prometheus.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    return proc, log, url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready: " + log_path.read_text()
            time.sleep(0.2)
    except BaseException:
        stop_prometheus(proc, log)
        raise


def stop_prometheus(proc: subprocess.Popen, log: IO[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    log.close()


def query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, what
        time.sleep(0.5)
