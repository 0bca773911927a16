"""docs/configuration.md is generated from the settings models and must match them."""

from __future__ import annotations

from pathlib import Path

from mlops_cli.configdoc import render, rows
from mlops_cli.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_doc_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m mlops_cli.configdoc > docs/configuration.md`"
    )


def test_every_setting_has_a_variable_a_real_default_and_a_description():
    table = list(rows())
    keys = {key for key, *_ in table}
    for name in Settings.model_fields:
        assert name in keys or any(k.startswith(name + ".") for k in keys), name
    for key, variable, _kind, _default, doc in table:
        assert doc, f"{key} has no docstring in mlops_cli/settings.py"
        if variable:
            assert variable == "MLOPS_" + key.upper().replace(".", "__")
    by_key = {key: default for key, _, _, default, _ in table}
    # the real defaults, not examples
    assert by_key["deploy.test.port"] == "`8700`" and by_key["deploy.prod.port"] == "`8701`"
    assert by_key["workdir"] == "`.mlops`" and by_key["validation.thresholds"] == "`{}`"
    assert by_key["model"] == ""
