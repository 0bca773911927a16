"""Ten real `mlops model register` processes of one name at once: each gets its own version, none is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_parallel_registers_of_one_name_get_distinct_versions_and_lose_none(tmp_path: Path, iris_artifact: Path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    environ["MLOPS_WORKDIR"] = str(tmp_path / "work")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlops_cli.cli",
                "model",
                "register",
                str(iris_artifact),
                "--name",
                "iris",
                "--tag",
                f"run-{i}",
            ],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(10)
    ]
    deadline = time.monotonic() + 120
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert [code for code, _, _ in outputs] == [0] * 10, outputs
    folder = tmp_path / "work" / "store" / "models" / "iris"
    versions = sorted(int(p.stem) for p in folder.glob("*.json"))
    assert versions == list(range(1, 11))
    tags = sorted(json.loads((folder / f"{v}.json").read_text())["tags"][0] for v in versions)
    assert tags == sorted(f"run-{i}" for i in range(10))  # every register's own metadata, none overwritten
    assert not list(folder.glob(".tmp-*"))


def test_a_register_killed_while_holding_the_lock_does_not_block_the_next(tmp_path: Path, iris_artifact: Path):
    """The lock is the kernel's (flock): kill -9 of its holder frees it at once; other names never wait on it."""
    import signal

    import mlops_cli
    from mlops_cli.sources.local import LocalStore, _locked

    store = LocalStore(tmp_path / "store")
    lock = tmp_path / "store" / "models" / "iris" / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from mlops_cli.sources.local import _locked\n"
                f"with _locked(Path({str(lock)!r}), 'model iris'):\n    print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(mlops_cli.__file__).parents[1])},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        assert store.register(iris_artifact, name="other").version == "1"  # another name: not held up
        assert time.monotonic() - began < 5
        with pytest.raises(Exception, match=rf"model iris is locked by another process \(pid {holder.pid}, "):
            with _locked(lock, "model iris", timeout_s=0.3):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        began = time.monotonic()
        assert store.register(iris_artifact, name="iris").version == "1"
        assert time.monotonic() - began < 5
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        holder.stdout.close()
