"""unit-test runs real pytest in a child process and writes JUnit XML."""

import pytest

from helpers import read_state
from mlops_cli.errors import StageFailed, UsageError
from mlops_cli.stages import unit_tests

pytestmark = pytest.mark.integration


def project(tmp_path, body):
    (tmp_path / "proj" / "tests").mkdir(parents=True)
    (tmp_path / "proj" / "tests" / "test_model.py").write_text(body)
    return tmp_path / "proj"


def test_default_is_the_toolkits_smoke_suite(settings):
    result = unit_tests.run(settings)
    assert result.tests >= 1 and result.failures == result.errors == 0
    assert "<testsuite" in (settings.workdir / "reports" / "unit-test.xml").read_text()


def test_project_tests_pass(make_settings, tmp_path):
    proj = project(tmp_path, "def test_a():\n    assert 1 + 1 == 2\n\ndef test_b():\n    assert 'a' in 'abc'\n")
    result = unit_tests.run(make_settings(unit_test={"project_dir": proj}))
    assert (result.tests, result.failures) == (2, 0)


def test_project_test_failure_fails_the_stage(make_settings, tmp_path):
    proj = project(tmp_path, "def test_a():\n    assert 1 == 2\n\ndef test_b():\n    pass\n")
    s = make_settings(unit_test={"project_dir": proj})
    with pytest.raises(StageFailed, match=r"unit tests failed: 1 failed, 0 errors of 2; JUnit XML: "):
        unit_tests.run(s)
    assert (s.workdir / "reports" / "unit-test.xml").is_file()
    assert read_state(s.workdir)["stages"]["unit-test"]["status"] == "failed"


def test_no_tests_collected_fails(make_settings, tmp_path):
    proj = project(tmp_path, "x = 1\n")
    with pytest.raises(StageFailed, match="no tests were collected"):
        unit_tests.run(make_settings(unit_test={"project_dir": proj}))


def test_missing_paths_are_named(make_settings, tmp_path):
    with pytest.raises(UsageError, match="has no tests/ directory"):
        unit_tests.run(make_settings(unit_test={"project_dir": tmp_path}))
    with pytest.raises(UsageError, match="test path nope not found"):
        unit_tests.run(make_settings(unit_test={"paths": ["nope"]}))
