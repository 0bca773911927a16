"""Intake latency of `mlops alert-relay` in an alert storm while its sinks are down (issue 10).

Starts the relay (from this checkout, or from another with --src, e.g. an older commit to compare)
with Slack and Kafka both pointing at dead ports on 127.0.0.1, so every alert stays queued, then
posts --alerts Alertmanager webhooks of one alert each from --senders concurrent clients and
prints the intake latency (POST to 202) overall and as the queue grows, and the throughput.

    python bench/relay_storm.py                       # 2,000 alerts, 8 senders
    git worktree add /tmp/relay-before 8bdd760        # or: git archive 8bdd760 | tar -x -C /tmp/relay-before
    python bench/relay_storm.py --src /tmp/relay-before --before-tls
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx  # only to wait for the relay to be ready and for the sinks to have failed

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def webhook(i: int) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": f"Storm{i}", "severity": "warning", "job": "iris"},
        "annotations": {"summary": f"storm alert {i}"},
        "startsAt": "2026-11-30T18:00:00Z",
        "fingerprint": f"fp{i}",
    }
    return json.dumps(
        {"version": "4", "status": "firing", "receiver": "mlops-relay", "groupKey": f"{{}}:{i}", "alerts": [alert]}
    ).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--src", type=Path, default=REPO, help="checkout whose mlops_cli runs the relay")
    parser.add_argument(
        "--before-tls",
        action="store_true",
        help="the --src checkout predates relay.insecure (e.g. 8bdd760): do not set it",
    )
    parser.add_argument("--timeout", type=float, default=900, help="give up on the storm after this many seconds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="relay-storm-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            "PYTHONPATH": str(args.src.resolve()),
            "MLOPS_RELAY__TOKEN": TOKEN,
            "MLOPS_RELAY__PORT": str(port),
            "MLOPS_RELAY__SINKS": '["slack", "kafka"]',
            "MLOPS_RELAY__QUEUE_DIR": str(work / "queue"),
            "MLOPS_RELAY__QUEUE_MAX": str(args.alerts * 2),
            "MLOPS_RELAY__MAX_BACKOFF_S": "5",
            "MLOPS_NOTIFY__SLACK__WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/services/T0/B0/x",
            "MLOPS_NOTIFY__SLACK__TIMEOUT_S": "2",
            "MLOPS_NOTIFY__KAFKA__TIMEOUT_S": "2",
            "MLOPS_NOTIFY__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        }
    )
    if not args.before_tls:
        env["MLOPS_RELAY__INSECURE"] = "true"  # plain http, on 127.0.0.1
    log = open(work / "relay.log", "wb")
    relay = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", "alert-relay"],
        cwd=work,
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if relay.poll() is not None:
                sys.exit(f"the relay exited {relay.returncode}: {(work / 'relay.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit("the relay did not start in 60 s")
            time.sleep(0.1)

        # the sinks are known down before the storm: one alert, until both sinks have failed with it
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        assert (
            httpx.post(
                f"http://127.0.0.1:{port}/v1/alertmanager", content=webhook(-1), headers=headers, timeout=30
            ).status_code
            == 202
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            failed_sinks = {
                line.split('sink="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("mlops_relay_delivery_failures_total{") and not line.endswith(" 0.0")
            }
            if {"slack", "kafka"} <= failed_sinks:
                break
            time.sleep(0.2)
        latency: dict[int, float] = {}
        failed: list[str] = []
        counter = iter(range(args.alerts))
        lock = threading.Lock()
        stop_at = time.monotonic() + args.timeout

        def sender() -> None:
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=args.timeout)
            try:
                while time.monotonic() < stop_at:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    began = time.perf_counter()
                    client.request("POST", "/v1/alertmanager", body=webhook(i), headers=headers)
                    r = client.getresponse()
                    body = r.read()
                    latency[i] = time.perf_counter() - began
                    if r.status != 202:
                        failed.append(f"{r.status} {body[:100]!r}")
            finally:
                client.close()

        threads = [threading.Thread(target=sender, daemon=True) for _ in range(args.senders)]
        cpu_before = cpu_seconds(relay.pid)
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, stop_at - time.monotonic() + 30))
        took = time.perf_counter() - began
        cpu = cpu_seconds(relay.pid) - cpu_before
        values = list(latency.values())
        print(
            f"relay from {args.src}: {len(values)} of {args.alerts} webhooks (1 alert each) in {took:.1f} s "
            f"({len(values) / took:.0f}/s), {args.senders} senders, slack and kafka down, {len(failed)} not 202"
        )
        print(
            f"intake  p50 {pct(values, 0.5):8.1f} ms   p95 {pct(values, 0.95):8.1f} ms   "
            f"p99 {pct(values, 0.99):8.1f} ms   max {max(values) * 1000:8.1f} ms"
        )
        print(f"relay CPU {cpu / max(1, len(values)) * 1000:.2f} ms per webhook (user + system, its threads included)")
        step = max(1, args.alerts // 5)
        for start in range(0, args.alerts, step):
            window = [latency[i] for i in range(start, min(start + step, args.alerts)) if i in latency]
            if window:
                print(
                    f"  queued {start:5d}-{start + len(window) - 1:5d}: p50 {pct(window, 0.5):8.1f} ms   "
                    f"p99 {pct(window, 0.99):8.1f} ms"
                )
        if failed:
            print("first refusals:", failed[:3])
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=30)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
