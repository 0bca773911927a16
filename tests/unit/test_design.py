"""Tests that protect the design: light CLI imports, serving standalone, Jenkinsfile = stages."""

import ast
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


def test_serving_never_imports_mlops_cli():
    offenders = []
    for path in (REPO / "serving").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "mlops_cli"]
    assert offenders == []
    assert len(list((REPO / "serving").rglob("*.py"))) >= 5


def test_jenkinsfile_stages_are_the_cli_stages_in_order():
    text = (REPO / "Jenkinsfile").read_text()
    assert tuple(re.findall(r"stage\('([^']+)'\)", text)) == STAGES
    for name in STAGES:
        assert re.search(rf"sh 'mlops {name}\b", text), name
