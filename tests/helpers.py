"""Helpers the tests import: a real iris model's registration, the real CLI, ports, tools."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
IRIS_SCHEMA = {
    "inputs": [{"name": f, "type": "number"} for f in FEATURES],
    "outputs": [{"name": "label", "type": "string"}, {"name": "probability", "type": "number"}],
}


def require_tool(name: str) -> str:
    """The tool's path; skip without it, but fail under MLOPS_REQUIRE_INTEGRATION=1 (CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("MLOPS_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message + " and MLOPS_REQUIRE_INTEGRATION=1")
        pytest.skip(message)
    return path


def require_module(name: str, reason: str = ""):
    """The imported module; skip without it, but fail under MLOPS_REQUIRE_INTEGRATION=1 (CI)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"the Python module {name} is not installed" + (f" ({reason})" if reason else "")
        if os.environ.get("MLOPS_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message + " and MLOPS_REQUIRE_INTEGRATION=1")
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def register_iris(settings, artifact: Path, **overrides: Any) -> str:
    """Register the iris model as a valid model would be; overrides make the failure modes."""
    from mlops_cli.register import reference_stats
    from mlops_cli.sources.local import LocalStore

    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    fields: dict[str, Any] = dict(
        name="iris",
        framework="sklearn",
        task="classification",
        metrics={"accuracy": 0.96},
        tags=["validated"],
        schema=IRIS_SCHEMA,
        examples=[{"instances": [dict(zip(FEATURES, r)) for r in rows]}, {"instances": [rows[0]]}],
        reference=reference_stats({f: [r[i] for r in rows] for i, f in enumerate(FEATURES)}),
        labels=["setosa", "versicolor", "virginica"],
    )
    fields.update(overrides)
    meta = LocalStore(settings.store_path).register(artifact, **fields)
    return f"local:{meta.name}@{meta.version}"


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """The real `mlops` command in a child process: real exit codes, real stdout/stderr."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mlops_cli.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_state(workdir: Path) -> dict[str, Any]:
    return json.loads((workdir / "state.json").read_text())


SLOW_MODEL = """
import os
import time

import numpy as np

class Slow:
    def __init__(self):
        if os.path.exists(%r):  # once validated: validation's trial run loads it as a server does
            time.sleep(%r)

    def predict(self, X):
        return np.zeros(len(X), dtype=int)

    def predict_proba(self, X):
        return np.full((len(X), 3), 1 / 3)
"""


def slow_model(tmp_path: Path, seconds: float = 60) -> tuple[Path, Path]:
    """A python model (class Slow) that loads at once until `slow` exists, then takes `seconds` to load; and `slow`."""
    model, slow = tmp_path / "slow.py", tmp_path / "slow-from-now-on"
    model.write_text(SLOW_MODEL % (str(slow), seconds))
    return model, slow


class Load:
    """A bounded client loop on a URL: counts answers, failures and which instances answered."""

    def __init__(self, url: str, clients: int = 4):
        self.url, self.stop = url, threading.Event()
        self.ok = self.failed = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i % 2 == 0,)) for i in range(clients)]

    def _run(self, keep_alive: bool) -> None:
        deadline = time.monotonic() + 180
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(base_url=self.url, timeout=10, limits=limits) as http:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    answer = http.post("/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
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

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
