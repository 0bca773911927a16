"""The server's memory per request: RSS growth per concurrent 1 MB predict request (issue 10).

For each concurrency C a fresh ``python -m serving`` starts on the benchmark bundle, answers one
small request (warm-up), and its RSS is read (the baseline). Then C clients POST a body of
``--body-bytes`` at once (raw HTTP/1.1 on 127.0.0.1), while a thread polls ``/health/live``.
Printed per C: answers by status, the peak RSS (the kernel's VmHWM), the growth per request and
per body byte (the "multiplier"), and the slowest ``/health/live`` answer during the burst.

    python bench/memory.py                             # this checkout, limits raised: the multiplier
    python bench/memory.py --limits default            # this checkout, default limits: the bound
    python bench/memory.py --code /path/to/old/checkout --limits none   # before (no limit keys)

``--limits raised`` sets ``max_rows`` and ``max_inflight_bytes`` high enough that every request
is served (what the multiplier needs); ``default`` leaves the spec's defaults (requests over the
in-flight budget are shed with 503); ``none`` writes no limit keys (for a checkout without them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_bundle  # noqa: E402

MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def body_of(row: list[float], size: int) -> bytes:
    one = json.dumps(row)
    count = max(1, (size - 20) // (len(one) + 2))
    return ('{"instances":[' + ",".join([one] * count) + "]}").encode()


async def read_status(reader: asyncio.StreamReader) -> int:
    """The status of one response, read through its Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def post(port: int, body: bytes, timeout: float) -> int:
    """One POST /v1/predict on its own connection; the status, or 0 for a connection error."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return 0
    try:
        head = (
            f"POST /v1/predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        try:
            await asyncio.wait_for(writer.drain(), timeout)
        except (ConnectionError, OSError):
            pass  # shed: the server answered and closed before reading the body
        return await asyncio.wait_for(read_status(reader), timeout)
    except (
        OSError,
        asyncio.TimeoutError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        ValueError,
        IndexError,
    ):
        return 0
    finally:
        writer.close()


class LiveProbe(threading.Thread):
    """Polls /health/live every 50 ms; keeps the slowest answer (a failure counts as its timeout)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop, self.slowest, self.failures = url, threading.Event(), 0.0, 0

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    ok = client.get(self.url + "/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.monotonic() - start
                self.failures += not ok
                self.slowest = max(self.slowest, took)
                self.stop.wait(0.05)


def run_one(code: Path, bundle: Path, concurrency: int, body: bytes, small: bytes, timeout: float) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        env = {**os.environ, "PYTHONPATH": str(code)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving",
                str(bundle),
                "--port",
                str(port),
                "--ready-file",
                str(ready),
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start (exit {proc.poll()})")
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port}"
            for _ in range(3):
                httpx.post(url + "/v1/predict", content=small, timeout=10)
            baseline = status_kib(proc.pid, "VmRSS") / 1024
            probe = LiveProbe(url)
            probe.start()
            started = time.monotonic()

            async def burst() -> list[int]:
                return await asyncio.gather(*(post(port, body, timeout) for _ in range(concurrency)))

            statuses = asyncio.run(burst())
            elapsed = time.monotonic() - started
            probe.stop.set()
            probe.join(10)
            peak = status_kib(proc.pid, "VmHWM") / 1024
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    served = statuses.count(200)
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    growth = peak - baseline
    return {
        "c": concurrency,
        "statuses": counts,
        "baseline": baseline,
        "peak": peak,
        "per_request": growth / max(served, 1),
        "multiplier": growth * MIB / max(served, 1) / len(body),
        "live_max": probe.slowest,
        "live_failures": probe.failures,
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--code", type=Path, default=HERE.parent, help="checkout whose serving/ runs (default: this one)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--body-bytes", type=int, default=1_000_000)
    parser.add_argument("--limits", choices=("raised", "default", "none"), default="raised")
    parser.add_argument(
        "--narrow",
        action="store_true",
        help="the iris classifier of the tests (4 features: about 8x the rows per byte)",
    )
    parser.add_argument("--timeout", type=float, default=120, help="per request, seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.narrow:
            sys.path.insert(0, str(HERE.parent / "tests" / "unit" / "serving"))
            import serving_bundles

            bundle = serving_bundles.write_bundle(
                Path(tmp) / "iris", serving_bundles.train_iris(), labels=serving_bundles.IRIS_LABELS
            )
            row, kind = serving_bundles.IRIS_ROWS[1], "iris (4 features)"
        else:
            paths = bench_bundle.write_bundles(Path(tmp))
            bundle, row, kind = paths["model-only"], paths["row"], "model-only (30 features)"
        spec = json.loads((bundle / "spec.json").read_text())
        spec["server"]["max_body_bytes"] = max(args.body_bytes + 4096, spec["server"]["max_body_bytes"])
        if args.limits == "raised":
            spec["server"].update(max_rows=10_000_000, max_inflight_bytes=1 << 40)
        elif args.limits == "default":
            spec["server"]["max_inflight_bytes"] = max(8 * MIB, spec["server"]["max_body_bytes"])
        (bundle / "spec.json").write_text(json.dumps(spec))
        body = body_of(row, args.body_bytes)
        small = body_of(row, 200)
        print(f"code {args.code}; bundle {kind}; body {len(body)} bytes; limits {args.limits}")
        print(
            f"{'c':>4} {'answers':<24} {'base MiB':>8} {'peak MiB':>8} {'MiB/req':>8} {'x body':>7} "
            f"{'live max s':>10} {'burst s':>8}"
        )
        for c in args.concurrency:
            r = run_one(args.code, bundle, c, body, small, args.timeout)
            answers = " ".join(f"{s}:{n}" for s, n in r["statuses"].items())
            print(
                f"{c:>4} {answers:<24} {r['baseline']:>8.1f} {r['peak']:>8.1f} {r['per_request']:>8.1f} "
                f"{r['multiplier']:>7.1f} {r['live_max']:>10.3f} {r['seconds']:>8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
