"""What each `mlops <stage>` process loads before its work (issue 17): only what that stage needs.

Jenkins runs every stage as a process of its own, so what a stage module imports, and what the
interpreter does with it, is paid seven times a release. Speed itself is measured in bench/lead_time.py.
"""

import json
import subprocess
import sys

import pytest

from mlops_cli.stages import MODULES, STAGES

# Modules a stage process has no use for unless the stage needs them (tens of ms each to import);
# httpx also pulls in rich and pygments where those are installed.
AVOIDABLE = ["httpx", "rich", "jinja2", "serving.spec"]
NEEDS = {
    "validate-model": {"serving.spec"},
    "assemble-server": {"jinja2", "serving.spec"},
    "smoke-test": {"httpx", "rich", "serving.spec"},
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_module_imports_only_what_its_stage_needs(stage):
    code = f"import sys, mlops_cli.cli, {MODULES[stage]}\nprint(','.join(m for m in {AVOIDABLE!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {name for name in out.strip().split(",") if name}
    assert loaded <= NEEDS.get(stage, set()), f"{stage} imports {sorted(loaded - NEEDS.get(stage, set()))}"


PROCESS = """
import gc, json, sys
from mlops_cli.cli import main
sys.argv = ["mlops", "unit-test", "--workdir", sys.argv[1], "--json"]
code = main()
print(json.dumps({"code": code, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def test_the_process_freezes_what_it_loaded_and_collects_garbage_again(tmp_path):
    """main() of the process's own command line (argv None): the collector is off while the command's
    modules load, then what they made is frozen (the exit's collection skips it) and the collector is on."""
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, str(tmp_path / "w")], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["code"] == 0, done.stderr
    assert found["enabled"] is True
    assert found["frozen"] > 10_000  # the CLI's, pydantic's and the settings' objects


def test_main_with_arguments_leaves_the_callers_collector_alone(tmp_path, monkeypatch):
    """In-process callers (tests, scripts) pass argv: nothing of theirs is frozen, the collector stays as it was."""
    import gc

    from mlops_cli.cli import main

    monkeypatch.chdir(tmp_path)
    before = gc.get_freeze_count()
    assert main(["unit-test", "--workdir", str(tmp_path / "w"), "-q"]) == 0
    assert gc.get_freeze_count() == before
    assert gc.isenabled()
    gc.disable()
    try:
        assert main(["unit-test", "--workdir", str(tmp_path / "w"), "-q"]) == 0
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()
