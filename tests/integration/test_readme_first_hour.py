"""The README's "Your own model" block, run as written (ports moved to free ones), and every relative
link of README.md and docs/*.md points at a file and heading that exist."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import free_port, run_cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def own_model_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_readme_own_model_commands_work_as_written(tmp_path, iris_artifact):
    shutil.copyfile(iris_artifact, tmp_path / "model.joblib")
    shim = tmp_path / "bin" / "mlops"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m mlops_cli.cli "$@"\n')  # the console script, as installed
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    test_port, prod_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        PATH=f"{shim.parent}:{env['PATH']}",
        PYTHONPATH=str(ROOT),
        MLOPS_DEPLOY__TEST__PORT=str(test_port),
        MLOPS_DEPLOY__PROD__PORT=str(prod_port),
    )
    block = own_model_block()
    before_stop = block.split("mlops stop")[0]
    try:
        done = subprocess.run(
            ["bash", "-euc", before_stop],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert (
            "registered local:iris@1" in done.stdout
            and len(re.findall(r"^rolling-update +passed", done.stdout, re.M)) == 2
        )
        assert "metric accuracy: accuracy = 0.97, needs >= 0.9" in done.stdout  # mlops.yaml's threshold applied
        answer = httpx.post(
            f"http://127.0.0.1:{prod_port}/v1/predict", json={"instances": [[6.7, 3.0, 5.2, 2.3]]}, timeout=10
        )
        assert answer.json()["predictions"][0]["label"] == "virginica"  # the README's curl answer
        stopped = subprocess.run(
            ["bash", "-euc", "mlops stop"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert stopped.returncode == 0 and "stopped prod" in stopped.stdout and "stopped test" in stopped.stdout
    finally:
        run_cli("stop", "--workdir", str(tmp_path / ".mlops"), timeout=120)


def _anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_every_relative_link_of_the_readme_and_docs_resolves():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in files:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and dest.suffix == ".md":
                headings = {_anchor(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(encoding="utf-8"), re.M)}
                if anchor not in headings:
                    broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_readme_states_python_cost_and_keeps_its_anchors():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Python 3.10 or newer" in readme and re.search(r"\d+ minutes on 2 cores", readme) and "1.3 GB" in readme
    headings = {_anchor(h) for h in re.findall(r"^#+ (.*)$", readme, re.M)}
    for anchor in (
        "try-it",
        "run-the-tests",
        "your-own-model",
        "the-stages",
        "model-sources",
        "images",
        "openshift--kubernetes",
        "run-it-in-jenkins",
        "when-a-run-is-killed-aborted-or-runs-twice",
        "releases-from-slack",
        "configuration",
        "client-protocols",
        "monitoring",
        "exit-codes",
        "layout",
    ):
        assert anchor in headings, anchor
    for command in (
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && mlops demo --workdir .mlops-demo",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest",
    ):
        assert command in readme
    assert command in (ROOT / ".ci" / "run").read_text().replace("pip install -q -e", "pip install -e")
