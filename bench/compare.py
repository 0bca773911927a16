"""Our runtime next to a plain FastAPI app and a raw ASGI ceiling, on one core each (127.0.0.1 only).

``python bench/compare.py [--seconds 15] [--concurrency 16 64] [--servers full model-only plain raw] [--rounds 1]``

Each server in turn runs pinned to CPU 0 (taskset) while ``wrk`` (Debian package ``wrk``, one
thread, a Lua POST script) drives ``POST /v1/predict`` from CPU 1 with one breast_cancer row.
For every server and concurrency it prints requests/s, p50/p99 latency, non-2xx and socket
errors, the server's RSS after the run, its time to ready (spawn to first 200 predict) and its CPU
time per request (from /proc: unlike throughput, barely moved by other work on the machine),
then the ratios of ``full`` to ``plain`` and to ``raw``, and of ``full`` to ``model-only``.
With ``--rounds N`` the servers take turns N times (so a busy neighbour slows them all alike)
and each row is the round with the median throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bundle import write_bundles  # noqa: E402

SERVERS = ("full", "model-only", "plain", "raw")


@dataclass
class Run:
    server: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    rss_mib: float
    ready_s: float
    cpu_us: float  # server CPU time (user + system) per answered request: robust to a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def argv_for(server: str, port: int, paths: dict, ready: Path) -> tuple[list[str], dict[str, str], Path]:
    env = dict(os.environ)
    if server in ("full", "model-only"):
        bundle = paths[server]
        env["PYTHONPATH"] = str(ROOT)
        return (
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
            env,
            bundle,
        )
    env.update(
        BENCH_MODEL=str(paths["artifact"]), BENCH_LABELS=",".join(paths["labels"]), PYTHONPATH=str(ROOT / "bench")
    )
    return (
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"peer_apps:{server}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env,
        ROOT,
    )


def start(server: str, paths: dict, body: str, tmp: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    argv, env, cwd = argv_for(server, port, paths, tmp / f"{server}.ready")
    began = time.monotonic()
    proc = subprocess.Popen([*pinned(0), *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() - began < 60:
        if proc.poll() is not None:
            raise SystemExit(f"{server} exited with {proc.returncode}")
        try:
            if (
                httpx.post(
                    f"{url}/v1/predict", content=body, headers={"content-type": "application/json"}, timeout=1
                ).status_code
                == 200
            ):
                return proc, url, time.monotonic() - began
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    proc.kill()
    raise SystemExit(f"{server} not ready after 60 s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _found(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"could not find {pattern!r} in wrk's output:\n{text}")
    return match


def _ms(text: str) -> float:
    value, unit = _found(r"^([\d.]+)(us|ms|s)$", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        [
            *pinned(1),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/v1/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if set(lat) != {"50", "99"}:
        raise SystemExit(f"could not read wrk's latency distribution:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(_found(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(_found(r"(\d+) requests in", out).group(1)),
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def module_shares(url: str, cpu: float) -> dict[str, float]:
    """Each module's share of the server's CPU time, from its mlops_module_duration_seconds."""
    from prometheus_client.parser import text_string_to_metric_families

    shares = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "mlops_module_duration_seconds_sum":
                shares[sample.labels["module"]] = sample.value / cpu
    return shares


SHARES: dict[str, list[dict[str, float]]] = {}


def measure(server: str, paths: dict, body: str, script: Path, tmp: Path, args) -> list[Run]:
    proc, url, ready_s = start(server, paths, body, tmp)
    runs = []
    cpu_start = cpu_seconds(proc.pid)
    try:
        wrk(url, script, 2, max(args.concurrency))  # warm-up, not reported
        for c in args.concurrency:
            before = cpu_seconds(proc.pid)
            result = wrk(url, script, args.seconds, c)
            cpu_us = (cpu_seconds(proc.pid) - before) / max(result.pop("requests"), 1) * 1e6
            runs.append(Run(server, c, rss_mib=rss_mib(proc.pid), ready_s=ready_s, cpu_us=cpu_us, **result))
        if server == "full":
            SHARES.setdefault(server, []).append(module_shares(url, cpu_seconds(proc.pid) - cpu_start))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return runs


def medians(runs: list[Run]) -> list[Run]:
    """Per (server, concurrency), the run with the median throughput, in first-seen order."""
    groups: dict[tuple[str, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.server, r.concurrency), []).append(r)
    return [sorted(g, key=lambda r: r.rps)[(len(g) - 1) // 2] for g in groups.values()]


def report(runs: list[Run]) -> str:
    lines = [
        f"{'server':<11} {'c':>3} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} {'sock err':>8} "
        f"{'RSS MiB':>7} {'ready s':>7} {'CPU us/req':>10}"
    ]
    for r in runs:
        lines.append(
            f"{r.server:<11} {r.concurrency:>3} {r.rps:>8.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{r.non_2xx:>7} {r.socket_errors:>8} {r.rss_mib:>7.1f} {r.ready_s:>7.2f} {r.cpu_us:>10.1f}"
        )
    by = {(r.server, r.concurrency): r for r in runs}
    for c in sorted({r.concurrency for r in runs}):
        full = by.get(("full", c))
        if full is None:
            continue
        for other, what in (
            ("plain", "plain FastAPI"),
            ("raw", "raw ASGI ceiling"),
            ("model-only", "model module alone"),
        ):
            if (other, c) in by:
                lines.append(
                    f"c={c}: full / {what} = {full.rps / by[(other, c)].rps:.2f} (throughput), "
                    f"{by[(other, c)].cpu_us / full.cpu_us:.2f} (inverse CPU per request)"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--rounds", type=int, default=1, help="take turns this many times; report medians")
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = write_bundles(tmp / "bundles")
        body = json.dumps({"instances": [paths["row"]]})
        script = tmp / "post.lua"
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'
        )
        runs = [
            run
            for _ in range(args.rounds)
            for server in args.servers
            for run in measure(server, paths, body, script, tmp, args)
        ]
    print(report(medians(runs)))
    for shares in SHARES.get("full", []):
        print(
            "full: share of server CPU per module: "
            + ", ".join(f"{m} {v:.1%}" for m, v in shares.items())
            + f"; outlier + drift {shares.get('outlier', 0) + shares.get('drift', 0):.1%}"
        )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in runs], indent=2) + "\n")


if __name__ == "__main__":
    main()
