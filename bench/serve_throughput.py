"""Requests per second and latency of one serving process on the demo model (127.0.0.1 only)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})


def assemble(workdir: Path) -> Path:
    from mlops_cli import ui
    from mlops_cli.config import load_settings
    from mlops_cli.demo import train_and_register
    from mlops_cli.stages import assemble_server, validate_model

    ui.set_quiet(True)
    settings = load_settings(None, {"workdir": workdir}, environ={})
    settings = settings.model_copy(update={"model": train_and_register(settings)})
    validate_model.run(settings)
    return Path(assemble_server.run(settings).bundle_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(bundle: Path, port: int, ready: Path) -> subprocess.Popen:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    proc = subprocess.Popen(
        [*pin, sys.executable, "-m", "serving", str(bundle), "--port", str(port), "--ready-file", str(ready)],
        cwd=bundle,
        env=dict(os.environ, PYTHONPATH=str(bundle)),
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.1)
    return proc


def with_wrk(url: str, seconds: int, connections: int) -> str:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY)}\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    out = subprocess.run(
        [*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), f"{url}/v1/predict"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out


async def with_python(url: str, seconds: int, connections: int) -> str:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=connections)) as client:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                answer = await client.post("/v1/predict", content=BODY, headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - start)
                errors += answer.status_code != 200

        await asyncio.gather(*(worker() for _ in range(connections)))
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return (
        f"python load generator: {len(latencies) / seconds:.0f} req/s, p50 {pct(0.5):.1f} ms, "
        f"p99 {pct(0.99):.1f} ms, non-200: {errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = assemble(Path(tmp) / "work")
        port = free_port()
        proc = start(bundle, port, Path(tmp) / "ready.json")
        url = f"http://127.0.0.1:{port}"
        try:
            if shutil.which("wrk"):
                print(with_wrk(url, args.seconds, args.connections))
            else:
                print(asyncio.run(with_python(url, args.seconds, args.connections)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
