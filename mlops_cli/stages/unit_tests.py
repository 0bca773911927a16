"""unit-test: run the project's tests (or the toolkit's own smoke suite) and write JUnit XML."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import StageFailed, UsageError
from ..extras import require
from ..junit import Case
from ..junit import write as write_junit
from ..proc import ProgramTimeout
from ..proc import run as run_program
from ..settings import Settings
from ..ui import progress
from .base import StageResult, stage

SELFTEST = Path(__file__).resolve().parent.parent / "selftest"
NO_TESTS = (
    "the model project has no tests (unit_test.project_dir and unit_test.paths are unset); "
    "the toolkit's own smoke suite runs with unit_test.selftest: true"
)


class UnitTestResult(StageResult):
    paths: list[str]
    junit_xml: str
    tests: int
    failures: int
    errors: int
    skipped: int

    def lines(self) -> list[str]:
        if self.status == "skipped":
            return [f"{self.message}; JUnit XML: {self.junit_xml}"]
        return [
            f"{self.tests} tests: {self.tests - self.failures - self.errors - self.skipped} passed, "
            f"{self.failures} failed, {self.errors} errors, {self.skipped} skipped; JUnit XML: {self.junit_xml}"
        ]


def _plan(settings: Settings) -> tuple[list[str], Path, list[str]] | None:
    """(test paths, working directory, extra pytest arguments); None: nothing to run."""
    cfg = settings.unit_test
    project = cfg.project_dir.resolve() if cfg.project_dir else None
    if project is not None and not project.is_dir():
        raise UsageError(f"unit_test.project_dir {cfg.project_dir} is not a directory")
    cwd = project or Path.cwd()
    if cfg.paths:
        missing = [p for p in cfg.paths if not (cwd / p).exists()]
        if missing:
            raise UsageError(f"test path {missing[0]} not found (from {cwd})", hint="check unit_test.paths")
        return list(cfg.paths), cwd, []
    if project is not None:
        if not (project / "tests").is_dir():
            raise UsageError(f"{project} has no tests/ directory", hint="set unit_test.paths")
        return ["tests"], project, []
    if not cfg.selftest:
        return None
    return [str(SELFTEST)], SELFTEST, ["-c", str(SELFTEST / "pytest.ini")]


def _counts(junit: Path) -> tuple[int, int, int, int]:
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = [sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")]
    return total[0], total[1], total[2], total[3]


@stage("unit-test")
def run(settings: Settings) -> UnitTestResult:
    plan = _plan(settings)
    reports = (settings.workdir / "reports").resolve()
    reports.mkdir(parents=True, exist_ok=True)
    junit = reports / "unit-test.xml"
    junit.unlink(missing_ok=True)
    if plan is None:  # no pytest start-up (seconds) for nothing: the reason goes to state and the JUnit XML
        progress(f"skipped: {NO_TESTS}")
        write_junit(
            junit, "unit-test", [Case(name="model project tests", classname="mlops.unit-test", skipped=NO_TESTS)]
        )
        return UnitTestResult(
            stage="unit-test",
            status="skipped",
            paths=[],
            junit_xml=str(junit),
            tests=1,
            failures=0,
            errors=0,
            skipped=1,
            message=f"skipped: {NO_TESTS}",
        )
    paths, cwd, extra = plan
    require(("pytest",), "unit-test runs pytest in this venv", "unit-test")
    progress(f"running pytest on {', '.join(paths)}")
    try:
        done = run_program(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *extra, *paths],
            cwd=cwd,
            timeout=settings.unit_test.timeout_s,
            stream=True,
        )
    except ProgramTimeout:
        raise StageFailed(
            f"unit-test: pytest did not finish within {settings.unit_test.timeout_s:g} s and was stopped",
            hint="raise unit_test.timeout_s (MLOPS_UNIT_TEST__TIMEOUT_S) or find the test that hangs",
        ) from None
    if done.returncode == 5:
        raise StageFailed(f"no tests were collected from {', '.join(paths)}")
    if not junit.is_file():
        raise StageFailed(f"pytest could not run (exit code {done.returncode}): {done.tail(1)}")
    tests, failures, errors, skipped = _counts(junit)
    if done.returncode != 0:
        raise StageFailed(
            f"unit tests failed: {failures} failed, {errors} errors of {tests}; "
            f"JUnit XML: {junit}; last line: {done.tail(1).strip()}"
        )
    return UnitTestResult(
        stage="unit-test",
        paths=paths,
        junit_xml=str(junit),
        tests=tests,
        failures=failures,
        errors=errors,
        skipped=skipped,
        message=f"{tests} tests passed",
    )
