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
    code = f"import sys, mlops_cli.cli; heavy = {HEAVY!r}; print(','.join(m for m in heavy if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_jenkinsfile_stages_are_the_cli_stages_in_order():
    text = (REPO / "Jenkinsfile").read_text()
    # the toolkit's stages in order; besides them only the release's start and its approval gate before production
    found = tuple(re.findall(r"stage\('([^']+)'\)", text))
    assert found == ("start", *STAGES[:-1], "approval", STAGES[-1])
    for name in STAGES:
        assert re.search(rf"sh 'mlops {name}\b", text), name


# --- one bundle contract: serving.spec and serving.modules define it, the toolkit only uses them --------------

import ast  # noqa: E402

CONTRACT = ("serving.spec", "serving.modules")
SCHEMA_KEYS = {"inputs", "outputs", "spec_version"}
# keys of the same name that are no schema: the Open Inference Protocol's infer *response* carries its tensors
# under "outputs" (smoke-test over v2 reads them back)
NOT_A_SCHEMA = {("mlops_cli/stages/smoke_oip.py", "outputs")}  # ("schema" and "modules" also name metadata fields)


def _sources(package: str) -> list:
    root = REPO / package
    return [
        (p.relative_to(REPO).as_posix(), ast.parse(p.read_text(), str(p)))
        for p in sorted(root.rglob("*.py"))
        if "selftest" not in p.parts
    ]


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_the_toolkit_reaches_into_serving_only_through_the_contract():
    offenders = [
        f"{path}: {name}"
        for path, tree in _sources("mlops_cli")
        for name in _imports(tree)
        if name.split(".")[0] == "serving" and not name.startswith(CONTRACT)
    ]
    assert len(_sources("mlops_cli")) >= 30
    assert offenders == []


def test_serving_never_imports_the_toolkit():
    offenders = [
        f"{path}: {name}"
        for path, tree in _sources("serving")
        for name in _imports(tree)
        if name.split(".")[0] == "mlops_cli"
    ]
    assert offenders == []


def test_no_toolkit_module_opens_spec_json_or_walks_a_schema_dict():
    """spec.json is named, written and read by serving.spec (SPEC_FILE, write_spec, load_spec); a schema is a
    serving.spec.SchemaSpec, read by attribute: no `x["inputs"]`, `x.get("outputs")`, `f["type"]` by hand."""
    offenders = []
    for path, tree in _sources("mlops_cli"):
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "spec.json" and id(node) not in docs:
                offenders.append(f"{path}:{node.lineno}: names spec.json")
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                key = node.args[0].value
            if key in SCHEMA_KEYS and (path, key) not in NOT_A_SCHEMA:
                offenders.append(f"{path}:{node.lineno}: reads [{key!r}] by hand")
    assert offenders == [], offenders


def test_backends_neither_read_nor_write_state():
    """Issue 10: targets, builders and sources get their settings and return results; the stage records them."""
    import ast

    offenders = []
    for folder in ("targets", "builders", "sources"):
        for path in sorted((REPO / "mlops_cli" / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in ("load", "save", "path")
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "State"
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} State.{node.attr}")
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "save"
                    and any(isinstance(a, ast.Attribute) and a.attr == "workdir" for a in node.args)
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .save(workdir)")
    assert offenders == []


def test_the_layout_shows_the_architecture():
    """Issue 11: click commands only in mlops_cli/commands/ (cli.py keeps the root group); no toolkit module is
    named like a test file (tools would collect it); the model metadata has its own module, not a package __init__."""
    modules = [
        p.relative_to(REPO).as_posix() for p in sorted((REPO / "mlops_cli").rglob("*.py")) if "selftest" not in p.parts
    ]
    assert "mlops_cli/commands/stages.py" in modules and "mlops_cli/sources/metadata.py" in modules
    test_like = [m for m in modules if m.rsplit("/", 1)[-1].startswith("test_") or m.endswith("_test.py")]
    assert test_like == []
    commands = [
        m
        for m in modules
        for line in (REPO / m).read_text(encoding="utf-8").splitlines()
        if re.match(r"\s*@(command\(|\w+\.(command|group)\()", line)
        and not (m.startswith("mlops_cli/commands/") or m == "mlops_cli/cli.py")
    ]
    assert commands == []
    assert "class ModelMetadata" not in (REPO / "mlops_cli" / "sources" / "__init__.py").read_text(encoding="utf-8")


def test_no_two_test_files_share_a_basename():
    """The test folders are not packages: pytest imports each test file by its basename, so two files of one
    name stop the collection of the whole suite ("import file mismatch")."""
    import collections

    names = collections.Counter(p.name for p in (REPO / "tests").rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
