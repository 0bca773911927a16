"""The runtime stands alone: it never imports mlops_cli, and importing it builds nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import prometheus_client

import serving

PACKAGE = Path(serving.__file__).parent


def test_serving_never_imports_mlops_cli() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "mlops_cli"]
    assert len(list(PACKAGE.rglob("*.py"))) >= 10
    assert offenders == []


def test_importing_the_runtime_creates_no_metrics() -> None:
    import serving.__main__
    import serving.app
    import serving.server  # noqa: F401

    assert not any(m.name.startswith("mlops_") for m in prometheus_client.REGISTRY.collect())
