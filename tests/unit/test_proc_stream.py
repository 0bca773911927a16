"""proc.run(stream=True) shows each line while the program still runs; --quiet shows none."""

from __future__ import annotations

import sys
import textwrap

import pytest
from helpers import run_cli

from mlops_cli import proc, ui
from mlops_cli.errors import MlopsError


def test_lines_are_shown_while_the_program_runs(tmp_path, monkeypatch):
    seen = tmp_path / "seen"
    child = textwrap.dedent(f"""
        import os, sys, time
        print("first line", flush=True)
        deadline = time.monotonic() + 20
        while not os.path.exists({str(seen)!r}):   # waits until the parent has shown the first line
            if time.monotonic() > deadline:
                print("the first line was not shown while running", flush=True)
                sys.exit(3)
            time.sleep(0.05)
        print("second line")
    """)
    shown = []

    def output_line(line):
        shown.append(line)
        if line == "first line":
            seen.touch()

    monkeypatch.setattr(ui, "output_line", output_line)
    done = proc.run([sys.executable, "-c", child], timeout=60, stream=True)
    assert done.returncode == 0, done.output
    assert shown == ["first line", "second line"] and done.output == "first line\nsecond line\n"


def test_a_streamed_program_over_its_time_is_stopped(monkeypatch):
    monkeypatch.setattr(ui, "output_line", lambda line: None)
    with pytest.raises(MlopsError, match="did not finish within 1 s"):
        proc.run([sys.executable, "-c", "import time; print('x', flush=True); time.sleep(30)"], timeout=1, stream=True)


def test_quiet_hides_progress_and_program_output(tmp_path):
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    loud = run_cli("unit-test", "--project-dir", str(project), "--workdir", str(tmp_path / "w1"), cwd=tmp_path)
    quiet = run_cli(
        "unit-test", "--quiet", "--project-dir", str(project), "--workdir", str(tmp_path / "w2"), cwd=tmp_path
    )
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert any(line.startswith("    | ") and "1 passed" in line for line in loud.stderr.splitlines())
    assert quiet.stderr == "" and "1 tests: 1 passed" in quiet.stdout
