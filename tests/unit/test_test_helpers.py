"""The test suite's own helpers: a missing module skips on a laptop and fails in CI."""

from __future__ import annotations

import pytest
from helpers import require_module


def test_require_module_returns_the_module():
    assert require_module("json").dumps([1]) == "[1]"


def test_a_missing_module_fails_under_require_integration(monkeypatch):
    monkeypatch.setenv("MLOPS_REQUIRE_INTEGRATION", "1")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_xyz is not installed"):
        require_module("no_such_module_xyz")


def test_a_missing_module_skips_otherwise(monkeypatch):
    monkeypatch.delenv("MLOPS_REQUIRE_INTEGRATION", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_module("no_such_module_xyz")
