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


def test_selftest_runs_the_toolkits_smoke_suite(make_settings):
    settings = make_settings(unit_test={"selftest": True})
    result = unit_tests.run(settings)
    assert result.status == "passed" and result.paths and "selftest" in result.paths[0]
    assert result.tests >= 1 and result.failures == result.errors == result.skipped == 0
    assert "<testsuite" in (settings.workdir / "reports" / "unit-test.xml").read_text()


def test_no_project_tests_is_skipped_with_the_reason_in_state_and_junit(settings):
    import xml.etree.ElementTree as ET

    result = unit_tests.run(settings)
    assert result.status == "skipped" and result.paths == [] and "no tests" in result.message
    suite = ET.parse(settings.workdir / "reports" / "unit-test.xml").getroot()
    assert (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("1", "1", "0")
    assert "unit_test.selftest" in suite.find("testcase/skipped").get("message")
    record = read_state(settings.workdir)["stages"]["unit-test"]
    assert record["status"] == "skipped" and "no tests" in record["message"]


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
