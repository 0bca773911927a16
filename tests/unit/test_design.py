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
