"""The same server through its three predict protocols: ``/v1/predict``, Open Inference Protocol v2
``infer`` (one 2-D tensor, and one tensor per feature) and KServe v1 ``:predict`` (127.0.0.1 only).

``python bench/protocols.py [--seconds 10] [--concurrency 64] [--rounds 3] [--bundle full]``

One ``python -m serving`` on the benchmark bundle (bench/bench_bundle.py: breast_cancer, 30
features, one row per request) runs pinned to CPU 0; ``wrk`` (one thread, a Lua POST script per
route) drives it from CPU 1, the routes taking turns ``--rounds`` times on the same process, so a
busy neighbour slows them alike. Per route: requests/s, p50/p99, non-2xx and the server's CPU
time per request (the median-throughput round), then each route's throughput and CPU per request
relative to ``/v1/predict``. Goal (issue 16): v2 infer >= 0.9x the throughput of /v1/predict.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from bench_bundle import write_bundles
from compare import Run, cpu_seconds, medians, rss_mib, start, wrk

MODEL = "breast-cancer"


def bodies(names: list[str], row: list[float]) -> dict[str, tuple[str, str]]:
    """route label -> (path, JSON body), one row each."""
    matrix = {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": [row]}]}
    named = {"inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [v]} for n, v in zip(names, row)]}
    return {
        "v1/predict": ("/v1/predict", json.dumps({"instances": [row]})),
        "v2 infer 2-D": (f"/v2/models/{MODEL}/infer", json.dumps(matrix)),
        "v2 infer named": (f"/v2/models/{MODEL}/infer", json.dumps(named)),
        "kserve v1": (f"/v1/models/{MODEL}:predict", json.dumps({"instances": [row]})),
    }


def script(tmp: Path, label: str, path: str, body: str) -> Path:
    out = tmp / (label.replace(" ", "_").replace("/", "_") + ".lua")
    out.write_text(
        f'wrk.method = "POST"\nwrk.path = {json.dumps(path)}\nwrk.body = {json.dumps(body)}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return out


def served_by_route(url: str) -> dict[str, float]:
    """The server's own count of 200 answers per route label: proves wrk hit each route."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            if s.name == "mlops_http_requests_total" and s.labels["status"] == "200" and s.labels["method"] == "POST":
                counts[s.labels["route"]] = s.value
    return counts


def report(runs: list[Run]) -> str:
    lines = [f"{'route':<15} {'c':>3} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} {'CPU us/req':>10}"]
    for r in runs:
        lines.append(
            f"{r.server:<15} {r.concurrency:>3} {r.rps:>8.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{r.non_2xx:>7} {r.cpu_us:>10.1f}"
        )
    by = {(r.server, r.concurrency): r for r in runs}
    for r in runs:
        base = by.get(("v1/predict", r.concurrency))
        if base is not None and r.server != "v1/predict":
            lines.append(
                f"c={r.concurrency}: {r.server} / v1/predict = {r.rps / base.rps:.2f} (throughput), "
                f"{base.cpu_us / r.cpu_us:.2f} (inverse CPU per request)"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bundle", choices=("full", "model-only"), default="full")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = write_bundles(tmp / "bundles")
        routes = bodies(paths["names"], paths["row"])
        proc, url, _ = start(args.bundle, paths, routes["v1/predict"][1], tmp)
        runs: list[Run] = []
        try:
            for label, (path, body) in routes.items():
                answer = httpx.post(url + path, content=body, headers={"content-type": "application/json"})
                if answer.status_code != 200:
                    raise SystemExit(f"{label}: {answer.status_code} {answer.text}")
            scripts = {label: script(tmp, label, path, body) for label, (path, body) in routes.items()}
            for lua in scripts.values():
                wrk(url, lua, 2, max(args.concurrency))  # warm-up, not reported
            order = list(scripts.items())
            for r in range(args.rounds):
                for label, lua in order[r % len(order) :] + order[: r % len(order)]:  # each round starts elsewhere
                    for c in args.concurrency:
                        before = cpu_seconds(proc.pid)
                        result = wrk(url, lua, args.seconds, c)
                        cpu_us = (cpu_seconds(proc.pid) - before) / max(result.pop("requests"), 1) * 1e6
                        runs.append(Run(label, c, rss_mib=rss_mib(proc.pid), ready_s=0.0, cpu_us=cpu_us, **result))
            counted = served_by_route(url)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(report(medians(runs)))
    print(
        "answered by route (server's mlops_http_requests_total, 200s): "
        + ", ".join(f"{route} {n:.0f}" for route, n in counted.items())
    )


if __name__ == "__main__":
    main()
