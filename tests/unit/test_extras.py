"""The heavy runtime packages live in extras: the CLI needs none of them, a command that does names its extra.

Modules are blocked the way an install without them looks: a meta-path finder in a child interpreter that
refuses them (ModuleNotFoundError, as a missing package gives), or `sys.modules[name] = None` in-process.
"""

import configparser
import re
import subprocess
import sys

import pytest
from helpers import REPO

from mlops_cli import DISTRIBUTION
from mlops_cli.extras import EXTRA_OF, FRAMEWORK_MODULES, SERVER_STACK, MissingExtra, load, missing, require

BLOCKER = """
import sys
BLOCKED = set({blocked!r})
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _run_blocked(blocked, code, tmp_path):
    script = BLOCKER.format(blocked=sorted(blocked)) + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def _setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _dists(block: str) -> set[str]:
    """Distribution names of a setup.cfg requirement list, lower-case, '_' as '-'."""
    out = set()
    for line in block.splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.add(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def _dist_of(module: str) -> str:
    return {
        "sklearn": "scikit-learn",
        "prometheus_client": "prometheus-client",
        "slack_sdk": "slack-sdk",
        "botocore": "boto3",
        "kafka": "kafka-python",
        "kubernetes_validate": "kubernetes-validate",
        "jenkins": "python-jenkins",
        "clearml": "clearml",
    }.get(module, module.replace("_", "-"))


def test_every_extra_named_in_an_error_exists_in_setup_cfg_and_carries_its_module():
    extras = {name: _dists(block) for name, block in _setup_cfg()["options.extras_require"].items()}
    for module, extra in EXTRA_OF.items():
        assert extra in extras, f"{module}: extra {extra!r} is not in setup.cfg"
        assert _dist_of(module) in extras[extra], f"extra {extra!r} does not install {module}"
    # what assemble-server pins into a bundle comes with the serve extra
    from mlops_cli.stages.assemble_server import FRAMEWORK_REQUIREMENTS, RUNTIME_REQUIREMENTS

    assert set(RUNTIME_REQUIREMENTS) <= extras["serve"]
    assert set(FRAMEWORK_REQUIREMENTS["sklearn"]) <= extras["sklearn"]
    assert set(FRAMEWORK_REQUIREMENTS["onnx"]) <= extras["onnx"]
    # the test extra (with the base install) holds every optional package the tests import
    assert extras["slack"] <= extras["test"] and extras["chatops"] <= extras["test"]


def test_the_base_install_runs_the_demo_without_extras():
    """README: `pip install -e . && mlops demo`: the demo's extras are repeated in install_requires."""
    cfg = _setup_cfg()
    base = _dists(cfg["options"]["install_requires"])
    extras = cfg["options.extras_require"]
    for extra in ("serve", "sklearn", "unit-test"):
        assert _dists(extras[extra]) <= base, extra
    assert "slack-sdk" not in base  # only the slack notifier and chatops need it


def test_the_cli_imports_and_shows_help_with_every_extra_missing(tmp_path):
    blocked = set(EXTRA_OF)
    code = (
        "import mlops_cli.cli\n"
        "from mlops_cli.cli import main\n"
        "for argv in (['--help'], ['--version'], ['validate-model', '--help'], ['deploy-test', '--help']):\n"
        "    assert main(argv) == 0, argv\n"
        "print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED))\n"
    )
    done = _run_blocked(blocked, code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded: []" in done.stdout
    assert "Usage:" in done.stdout and "Traceback" not in done.stderr


def test_the_blocker_really_blocks(tmp_path):
    """The check above means something: the same child cannot import a blocked module."""
    done = _run_blocked({"fastapi"}, "import fastapi\n", tmp_path)
    assert done.returncode != 0 and "No module named 'fastapi'" in done.stderr


def test_demo_without_scikit_learn_fails_in_one_line_naming_the_extra(tmp_path):
    code = f"from mlops_cli.cli import main\nsys.exit(main(['demo', '--workdir', {str(tmp_path / 'w')!r}]))\n"
    done = _run_blocked({"sklearn"}, code, tmp_path)
    assert done.returncode == MissingExtra.exit_code == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"error: mlops demo trains a scikit-learn model, which needs the 'sklearn' extra "
        f"(sklearn is not installed): pip install '{DISTRIBUTION}[sklearn]'"
    ]
    assert not (tmp_path / "w" / "demo").exists()  # nothing trained


def test_unit_test_without_pytest_fails_in_one_line_naming_the_extra(tmp_path):
    (tmp_path / "proj" / "tests").mkdir(parents=True)  # tests to run (without any, unit-test skips: no pytest needed)
    code = (
        f"from mlops_cli.cli import main\nsys.exit(main(['unit-test', '--workdir', {str(tmp_path / 'w')!r}, "
        f"'--project-dir', {str(tmp_path / 'proj')!r}]))\n"
    )
    done = _run_blocked({"pytest"}, code, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: unit-test runs pytest in this venv, which needs the 'unit-test' extra (pytest is not installed): "
        f"pip install '{DISTRIBUTION}[unit-test]'"
    ]


def test_local_target_without_the_server_stack_refuses_before_starting_anything(tmp_path, monkeypatch):
    from mlops_cli.config import Settings
    from mlops_cli.targets.local import LocalTarget

    monkeypatch.setitem(sys.modules, "fastapi", None)  # what an install without the package looks like to find_spec
    target = LocalTarget(Settings(workdir=tmp_path))
    with pytest.raises(MissingExtra) as caught:
        target.deploy("test", release=None, current=None)
    assert str(caught.value) == (
        f"the local target runs the server, which needs the 'serve' extra "
        f"(fastapi is not installed): pip install '{DISTRIBUTION}[serve]'"
    )
    assert not (tmp_path / "run").exists() and not any(tmp_path.iterdir())


def test_trial_run_names_the_models_framework_extra(tmp_path, monkeypatch):
    from mlops_cli.trial import require_loader

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(
        MissingExtra,
        match=r"\(a onnx model\), which needs the 'onnx' extra \(onnxruntime is not "
        r"installed\): pip install 'mlops-pipeline-kit\[onnx\]'",
    ):
        require_loader("onnx")
    require_loader("python")  # a .py model needs only the server's own code


def test_helpers(monkeypatch):
    assert missing(["json", "no_such_module_c11"]) == ["no_such_module_c11"]
    assert missing(["no_such_module_c11.sub"]) == ["no_such_module_c11.sub"]  # a submodule of a missing package
    # not installed, as find_spec and import see it (an earlier test may have imported the real ones)
    monkeypatch.setitem(sys.modules, "slack_sdk", None)
    monkeypatch.setitem(sys.modules, "slack_sdk.webhook", None)
    assert missing(["slack_sdk", "slack_sdk.webhook"]) == ["slack_sdk", "slack_sdk.webhook"]
    with pytest.raises(MissingExtra, match=r"^the slack notifier talks to Slack, which needs the 'slack' extra"):
        load("slack_sdk.webhook", "the slack notifier talks to Slack")
    with pytest.raises(MissingExtra, match=r"needs no_such_module_c11, and it is not installed: pip install "):
        require(["no_such_module_c11"], "x")
    assert load("json", "x").dumps(1) == "1"
    assert set(SERVER_STACK) <= set(EXTRA_OF) and all(set(m) <= set(EXTRA_OF) for m in FRAMEWORK_MODULES.values())
