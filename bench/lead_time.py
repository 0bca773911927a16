"""Release lead time: a new version of the benchmark model from registered to serving in prod (issue 17).

For each target (``local``: the bundle as a process; ``container``: buildah image pushed to a real
``docker-registry`` on 127.0.0.1, run by podman) the script registers the benchmark model
(bench/bench_bundle.py: StandardScaler + LogisticRegression on breast_cancer, 30 features) and
releases it once (not timed: the first release, cold caches), then N rounds of: register a new
version (other hyper-parameters), run the seven stages as seven ``mlops <stage> --json`` processes
(as a Jenkins pipeline does) while a bounded load (4 client threads, ~100 req/s each at most) posts
to prod and counts every failed request.

What it prints, measured rather than estimated:
  - per stage: the process's wall time, the stage's own time (state.json ``duration_s``) and the
    difference (process start, imports, settings, lock, state: "overhead");
  - per stage: a fresh interpreter's ``import mlops_cli.cli`` + the stage module (the floor of that
    overhead) and its biggest imports (``python -X importtime``);
  - the progress lines of the median round, each with its time since the process started (where
    the stage's own time goes: server start to ready, drain, image steps, push);
  - the server's time to ready for the benchmark bundle (spawn to its ready file, median of 5) and
    its own log's timestamps;
  - failed requests during the swaps (must be 0).

Run:  python bench/lead_time.py --rounds 3 --target both      (container: root, buildah, podman,
      runc, docker-registry, debootstrap; about 3 min per round on 2 shared cores)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

STAGES = [
    "unit-test",
    "validate-model",
    "assemble-server",
    "build-image",
    "deploy-test",
    "smoke-test",
    "rolling-update",
]
try:  # stage -> module; older checkouts named the modules after the stages
    from mlops_cli.stages import MODULES
except ImportError:
    MODULES = {s: f"mlops_cli.stages.{s.replace('-', '_')}" for s in STAGES}
BENCH_CACHE = Path.home() / ".cache" / "mlops-bench"  # podman/buildah storage of the benchmark (layers cached)
ROOTFS_CACHE = Path.home() / ".cache" / "mlops-tests"  # the debootstrap rootfs tarball the tests cache
BASE_IMAGE = "localhost/mlops-python-base:bookworm"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------- model


class Model:
    """The benchmark model, registered in the workdir's local store with what validation needs."""

    def __init__(self, tmp: Path):
        import numpy as np
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        self.names = [n.replace(" ", "_") for n in data.feature_names]
        self.X, self.y = data.data, data.target
        self.row = [float(v) for v in self.X[0]]
        self.tmp = tmp
        self.np = np

    def register(self, store: Path, c: float) -> str:
        import joblib
        from bench_bundle import LABELS
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from mlops_cli.register import reference_stats
        from mlops_cli.sources.local import LocalStore

        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(self.X, self.y)
        path = self.tmp / f"model-{c}.joblib"
        joblib.dump(model, path)
        schema = {
            "inputs": [{"name": n, "type": "number"} for n in self.names],
            "outputs": [{"name": "label", "type": "string"}, {"name": "probability", "type": "number"}],
        }
        meta = LocalStore(store).register(
            path,
            name="breast-cancer",
            framework="sklearn",
            task="classification",
            metrics={"accuracy": float(model.score(self.X, self.y))},
            tags=["validated"],
            schema=schema,
            examples=[{"instances": [dict(zip(self.names, self.row))]}, {"instances": [self.row]}],
            reference=reference_stats({n: self.X[:, i].tolist() for i, n in enumerate(self.names)}),
            labels=LABELS,
        )
        return f"local:{meta.name}@{meta.version}"


# ----------------------------------------------------------------------------------------------- load


class Load:
    """Bounded load on prod: 4 threads (2 keep-alive, 2 a new connection per request), each at most
    one request per 10 ms; every non-200 or transport error is a failed request."""

    def __init__(self, url: str, row: list[float], seconds_max: float = 900):
        self.url, self.body, self.deadline = url, {"instances": [row]}, time.monotonic() + seconds_max
        self.ok = self.failed = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i % 2 == 0,), daemon=True) for i in range(4)]

    def _client(self, keep_alive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(base_url=self.url, timeout=10, limits=limits) as http:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                try:
                    answer = http.post("/v1/predict", json=self.body)
                    ok, detail = answer.status_code == 200, f"status {answer.status_code}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                with self.lock:
                    if ok:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.failures.append(detail)
                time.sleep(0.01)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


# ------------------------------------------------------------------------------------------ the stages


def run_stage(stage: str, cwd: Path, env: dict[str, str], extra: list[str], record: str = "") -> dict[str, Any]:
    """One `mlops <stage> --json` process; its stderr lines time-stamped as they arrive."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_cli.cli", stage, *extra, "--json"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr

    def read() -> None:
        for line in stderr:
            lines.append((time.monotonic() - start, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out = proc.stdout.read()
    _, wait_status, usage = os.wait4(proc.pid, 0)  # its CPU time and that of the children it waited for
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    reader.join(timeout=10)
    wall = time.monotonic() - start
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-15:])
        raise SystemExit(f"mlops {stage} failed (exit {proc.returncode}):\n{tail}\n{out[-2000:]}")
    state = json.loads((cwd / ".mlops" / "state.json").read_text())
    own = state["stages"][record or stage]["duration_s"]
    try:
        status = json.loads(out).get("status", "?")
    except ValueError:
        status = "?"
    return {"stage": stage, "wall": wall, "own": own, "cpu": cpu, "status": status, "lines": lines}


def import_floor(stage: str, env: dict[str, str], repeat: int = 3) -> tuple[float, list[tuple[float, str]]]:
    """A fresh interpreter importing the CLI and the stage module: wall time (median) and top imports."""
    code = f"import mlops_cli.cli, {MODULES[stage]}"
    times = []
    for _ in range(repeat):
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        times.append(time.monotonic() - start)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    top = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level imports only: their cumulative time
            top.append((int(m.group(2)) / 1e6, m.group(4)))
    return statistics.median(times), sorted(top, reverse=True)[:6]


def server_ready(bundle: Path, env: dict[str, str], repeat: int = 5) -> tuple[list[float], list[float], list[str]]:
    """Spawn `python -m serving BUNDLE` and poll its ready file every 2 ms: seconds to ready, the server's CPU
    seconds until then (steadier than wall time on a shared machine), and its log."""
    times, cpu, log = [], [], []
    tick = os.sysconf("SC_CLK_TCK")
    for i in range(repeat):
        ready = bundle.parent / f"bench-ready-{i}.json"
        ready.unlink(missing_ok=True)
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving", str(bundle), "--port", str(free_port()), "--ready-file", str(ready)],
            env=dict(env, PYTHONPATH=f"{bundle}:{ROOT}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() - start > 60:
                    raise SystemExit(f"the server did not become ready: {proc.communicate()[1][-500:]}")
                time.sleep(0.002)
            times.append(time.monotonic() - start)
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu.append((int(fields[11]) + int(fields[12])) / tick)
        finally:
            proc.send_signal(signal.SIGKILL)
            err = proc.communicate(timeout=10)[1]
            ready.unlink(missing_ok=True)
        log = [line for line in err.splitlines() if line.strip()]
    return times, cpu, log


# ---------------------------------------------------------------------------------------------- target


def container_env(tmp: Path) -> dict[str, str]:
    (tmp / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n'
    )
    (tmp / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{BENCH_CACHE / "storage"}"\nrunroot = "{BENCH_CACHE / "run"}"\n'
    )
    (tmp / "registries.conf").write_text("unqualified-search-registries = []\n")
    return {
        "CONTAINERS_CONF": str(tmp / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(tmp / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(tmp / "registries.conf"),
    }


def start_registry(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {folder / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(folder / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc, f"127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("docker-registry did not start")


def write_config(cwd: Path, target: str, registry: str | None) -> dict[str, Any]:
    import yaml

    config: dict[str, Any] = {
        "validation": {"thresholds": {"accuracy": ">= 0.9"}},
        "deploy": {"target": target, "test": {"port": free_port()}, "prod": {"port": free_port()}},
    }
    if target == "container":
        config["build"] = {
            "builder": "buildah",
            "registry": registry,
            "insecure": True,
            "storage_driver": "overlay",
            "isolation": "chroot",
        }
        config["assemble"] = {"base_image": BASE_IMAGE}
    (cwd / "mlops.yaml").write_text(yaml.safe_dump(config))
    return config


def run_pipeline(cwd: Path, env: dict[str, str], ref: str) -> list[dict[str, Any]]:
    """One `mlops pipeline run --json` process: its wall time, each stage's own time (state.json) and lines."""
    result = run_stage("pipeline", cwd, env, ["run", "--model", ref], record="rolling-update")
    state = json.loads((cwd / ".mlops" / "state.json").read_text())["stages"]
    stages = [
        {
            "stage": name,
            "wall": state[name]["duration_s"],
            "own": state[name]["duration_s"],
            "cpu": 0.0,
            "status": state[name]["status"],
            "lines": [],
        }
        for name in STAGES
    ]
    result.update(stage="pipeline run (one process)", own=sum(x["own"] for x in stages))
    return stages + [result]


def bench_target(target: str, rounds: int, tmp: Path, model: Model, trace: bool, mode: str) -> dict[str, Any]:
    cwd = tmp / target
    cwd.mkdir()
    extra_env: dict[str, str] = {}
    registry_proc = None
    try:
        if target == "container":
            extra_env = container_env(tmp)
            os.environ.update(extra_env)
            registry_proc, registry = start_registry(tmp / "registry")
            with open(tmp / "registries.conf", "a") as fh:
                fh.write(f'\n[[registry]]\nlocation = "{registry}"\ninsecure = true\n')
            from mlops_cli.baseimage import build_base_image
            from mlops_cli.config import load_settings

            build_base_image(
                load_settings(None, {"workdir": tmp / "base", "build": {"storage_driver": "overlay"}}, environ={}),
                name=BASE_IMAGE,
                cache_dir=ROOTFS_CACHE,
            )
        else:
            registry = None
        config = write_config(cwd, target, registry)
        env = clean_environ(extra_env)
        store = cwd / ".mlops" / "store"
        prod_url = f"http://127.0.0.1:{config['deploy']['prod']['port']}"

        def release(ref: str, load: bool) -> tuple[list[dict[str, Any]], Load | None]:
            results, ctx = [], Load(prod_url, model.row) if load else None
            if ctx:
                ctx.__enter__()
            try:
                if mode == "pipeline" and load:
                    results = run_pipeline(cwd, env, ref)
                for stage in STAGES if not results else []:
                    args = ["--model", ref] if stage == "validate-model" else []
                    results.append(run_stage(stage, cwd, env, args))
            finally:
                if ctx:
                    ctx.__exit__()
            return results, ctx

        print(f"[{target}] first release (not timed: cold caches)", flush=True)
        first, _ = release(model.register(store, 1.0), load=False)
        print(f"[{target}] first release: {sum(r['wall'] for r in first):.1f} s", flush=True)
        runs = []
        for i in range(rounds):
            ref = model.register(store, [0.5, 2.0, 0.3, 3.0, 0.7][i % 5] * (1 + i // 5))
            results, load = release(ref, load=True)
            assert load is not None
            total = results[-1]["wall"] if mode == "pipeline" else sum(r["wall"] for r in results)
            runs.append(
                {
                    "results": results,
                    "total": total,
                    "ok": load.ok,
                    "failed": load.failed,
                    "failures": load.failures[:5],
                }
            )
            print(
                f"[{target}] round {i + 1}: {total:.1f} s, {load.ok} requests answered, {load.failed} failed "
                f"(load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        bundle = Path(json.loads((cwd / ".mlops" / "state.json").read_text())["bundle"]["path"])
        ready_times, ready_cpu, ready_log = server_ready(bundle, env)
        floors = {stage: import_floor(stage, env) for stage in STAGES}
        subprocess.run(
            [sys.executable, "-m", "mlops_cli.cli", "stop", "-q"], cwd=cwd, env=env, check=False, timeout=300
        )
        return {
            "target": target,
            "mode": mode,
            "runs": runs,
            "ready": ready_times,
            "ready_cpu": ready_cpu,
            "ready_log": ready_log,
            "floors": floors,
            "trace": trace,
        }
    finally:
        if registry_proc is not None:
            registry_proc.terminate()
            registry_proc.wait(timeout=10)


def report(found: dict[str, Any]) -> None:
    target, runs = found["target"], found["runs"]
    median_run = sorted(runs, key=lambda r: r["total"])[len(runs) // 2]
    how = "one `mlops pipeline run` process" if found["mode"] == "pipeline" else "seven `mlops <stage>` processes"
    print(f"\n=== {target} target: {len(runs)} rounds, registered -> serving in prod, {how} ===")
    print(
        f"{'stage':16} {'wall s':>7} {'own s':>7} {'overhead':>8} {'import floor':>12} {'CPU s':>6}  "
        f"(median of rounds; wall per round)"
    )
    for i, stage in enumerate(STAGES + (["pipeline run (one process)"] if found["mode"] == "pipeline" else [])):
        walls = [r["results"][i]["wall"] for r in runs]
        owns = [r["results"][i]["own"] for r in runs]
        floor = found["floors"][stage][0] if stage in found["floors"] else 0.0
        cpus = [r["results"][i]["cpu"] for r in runs]
        status = runs[-1]["results"][i]["status"]
        print(
            f"{stage:16} {statistics.median(walls):7.2f} {statistics.median(owns):7.2f} "
            f"{statistics.median(w - o for w, o in zip(walls, owns)):8.2f} {floor:12.2f} "
            f"{statistics.median(cpus):6.2f}  "
            f"{' '.join(f'{w:.2f}' for w in walls)}{'  (' + status + ')' if status != 'passed' else ''}"
        )
    totals = [r["total"] for r in runs]
    cpu_totals = [sum(x["cpu"] for x in r["results"]) for r in runs]
    print(
        f"{'total':16} {statistics.median(totals):7.2f}   rounds: {' '.join(f'{t:.1f}' for t in totals)}; "
        f"CPU s of the mlops processes and the children they waited for (not the servers they started): "
        f"{' '.join(f'{t:.1f}' for t in cpu_totals)}"
    )
    print(
        f"failed requests under load during the rounds: {sum(r['failed'] for r in runs)} "
        f"of {sum(r['ok'] + r['failed'] for r in runs)}"
        + (
            f"  first failures: {[f for r in runs for f in r['failures']][:5]}"
            if any(r["failed"] for r in runs)
            else ""
        )
    )
    ready = found["ready"]
    print(
        f"server time-to-ready (spawn -> ready file, benchmark bundle): median {statistics.median(ready):.2f} s, "
        f"all {' '.join(f'{t:.2f}' for t in ready)}; its CPU time until ready: median "
        f"{statistics.median(found['ready_cpu']):.2f} s"
    )
    for line in found["ready_log"][:6]:
        print(f"    server log | {line}")
    print("biggest imports of each stage's process (cumulative s, python -X importtime):")
    for stage in STAGES:
        print(f"  {stage:16} " + ", ".join(f"{name} {sec:.2f}" for sec, name in found["floors"][stage][1][:4]))
    print(f"progress lines of the median round ({median_run['total']:.1f} s), seconds since the process started:")
    for result in median_run["results"]:
        print(f"  {result['stage']} ({result['wall']:.2f} s)")
        lines = result["lines"]
        if not found["trace"]:
            lines = [
                (t, line)
                for t, line in lines
                if not line.startswith("    |") or re.search(r"STEP|Copying|Writing|Storing|COMMIT|passed|failed", line)
            ]
        for t, line in lines[:60]:
            print(f"    {t:6.2f} {line[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", choices=["local", "container", "both"], default="both")
    parser.add_argument(
        "--mode",
        choices=["stages", "pipeline"],
        default="stages",
        help="stages: seven `mlops <stage>` processes (as Jenkins runs them); pipeline: one "
        "`mlops pipeline run` process per round",
    )
    parser.add_argument("--trace", action="store_true", help="every output line of the median round's stages")
    args = parser.parse_args()
    targets = ["local", "container"] if args.target == "both" else [args.target]
    found = []
    with tempfile.TemporaryDirectory(prefix="lead-time-", ignore_cleanup_errors=True) as tmp:
        model = Model(Path(tmp))
        for target in targets:
            found.append(bench_target(target, args.rounds, Path(tmp), model, args.trace, args.mode))
    load = os.getloadavg()
    for item in found:
        report(item)
    print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (2 cores; others' tests share them)")


if __name__ == "__main__":
    main()
