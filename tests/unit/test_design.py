"""Tests that protect the design: light CLI imports, Jenkinsfile = stages.

(`serving` never importing mlops_cli is tests/unit/serving/test_runtime_package.py.)
"""

import re
import subprocess
import sys

from helpers import REPO
from mlops_cli.stages import STAGES

HEAVY = ["clearml", "boto3", "kubernetes", "docker", "sklearn", "fastapi", "uvicorn", "numpy"]


def test_cli_import_pulls_in_no_heavy_client():
    code = ("import sys, mlops_cli.cli; heavy = %r; "
            "print(','.join(m for m in heavy if m in sys.modules))" % HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_jenkinsfile_stages_are_the_cli_stages_in_order():
    text = (REPO / "Jenkinsfile").read_text()
    # the toolkit's stages in order; besides them only the release's start and its approval gate before production
    found = tuple(re.findall(r"stage\('([^']+)'\)", text))
    assert found == ("start", *STAGES[:-1], "approval", STAGES[-1])
    for name in STAGES:
        assert re.search(rf"sh 'mlops {name}\b", text), name


def test_backends_neither_read_nor_write_state():
    """Issue 10: targets, builders and sources get their settings and return results; the stage records them."""
    import ast

    offenders = []
    for folder in ("targets", "builders", "sources"):
        for path in sorted((REPO / "mlops_cli" / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr in ("load", "save", "path") and \
                        isinstance(node.value, ast.Name) and node.value.id == "State":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} State.{node.attr}")
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "save" \
                        and any(isinstance(a, ast.Attribute) and a.attr == "workdir" for a in node.args):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .save(workdir)")
    assert offenders == []
