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
    procs = [subprocess.Popen([sys.executable, "-m", "mlops_cli.cli", "model", "register", str(iris_artifact),
                               "--name", "iris", "--tag", f"run-{i}"], cwd=tmp_path, env=environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(10)]
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
