"""mlops_cli.thresholds: one parser and checker of metric conditions, for the settings and validate-model."""

import math

import pytest

from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError
from mlops_cli.thresholds import Threshold, check_conditions, parse


@pytest.mark.parametrize(
    "condition, op, bound",
    [
        (">= 0.9", ">=", 0.9),
        ("<0.25", "<", 0.25),
        (" == 1 ", "==", 1.0),
        ("> -3e-2", ">", -0.03),
        ("<= 10.", "<=", 10.0),
    ],
)
def test_parse(condition, op, bound):
    assert parse(condition) == Threshold(op, bound)


@pytest.mark.parametrize("condition", [">= ", "0.9", "=> 0.9", ">= nan", ">= inf", ">= 0.9 or so", 0.9, None])
def test_parse_refuses_what_is_no_condition(condition):
    with pytest.raises(
        ValueError, match=r"^threshold for 'accuracy' must look like '>= 0.9' \(one of >=, >, <=, <, ==\)$"
    ):
        parse(condition, "accuracy")


def test_met_by_and_never_by_nan_or_infinity():
    t = parse(">= 0.9")
    assert t.met_by(0.9) and t.met_by(0.95) and not t.met_by(0.89)
    assert not parse("< 1").met_by(1.0) and parse("< 1").met_by(0.5) and parse("== 2").met_by(2.0)
    for value in (math.nan, math.inf, -math.inf):
        assert not t.met_by(value) and not parse("<= 1").met_by(value)
    assert str(t) == ">= 0.9" and str(parse("<1e-3")) == "< 0.001"


def test_check_conditions_names_the_first_bad_metric():
    check_conditions({"accuracy": ">= 0.9", "rmse": "< 3"})
    with pytest.raises(ValueError, match="threshold for 'rmse'"):
        check_conditions({"accuracy": ">= 0.9", "rmse": "small"})


def test_settings_check_thresholds_at_load_with_it():
    ok = load_settings(
        None,
        {
            "validation": {
                "thresholds": {"accuracy": ">= 0.9"},
                "holdout": {"path": "h.csv", "thresholds": {"f1": "> 0.5"}},
            }
        },
        environ={},
    )
    assert ok.validation.thresholds == {"accuracy": ">= 0.9"}
    with pytest.raises(ConfigError, match=r"validation\.thresholds.*threshold for 'accuracy' must look like"):
        load_settings(None, {"validation": {"thresholds": {"accuracy": "high"}}}, environ={})
    with pytest.raises(ConfigError, match=r"threshold for 'f1' must look like"):
        load_settings(None, {"validation": {"holdout": {"path": "h.csv", "thresholds": {"f1": "> x"}}}}, environ={})
