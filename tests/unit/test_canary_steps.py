"""rollout settings: steps in Argo Rollouts' words, checked at load with one-line errors; HAProxy's config."""

from __future__ import annotations

import pytest

from mlops_cli.canary import haproxy
from mlops_cli.canary.steps import describe, duration_s
from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError


def load(steps, **rollout):
    return load_settings(None, {"rollout": {"strategy": "canary", "steps": steps, **rollout}}, environ={})


def test_steps_are_parsed_into_canonical_one_key_steps():
    s = load(
        [
            {"set_weight": 10},
            {"pause": "90s"},
            {"pause": {"duration": "2m"}},
            {"pause": {}},
            {"pause": 5},
            {"analysis": "default"},
            {"set_weight": 100},
        ]
    )
    assert s.rollout.steps == [
        {"set_weight": 10},
        {"pause": 90.0},
        {"pause": 120.0},
        {"pause": None},
        {"pause": 5.0},
        {"analysis": "default"},
        {"set_weight": 100},
    ]
    assert [describe(x) for x in s.rollout.steps[:4]] == [
        "set_weight 10",
        "pause 90s",
        "pause 120s",
        "pause until promoted",
    ]


def test_default_strategy_is_rolling():
    assert load_settings(None, {}, environ={}).rollout.strategy == "rolling"


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"set_weight": 150}], "step 1: set_weight takes a whole percent 0..100, got 150"),
        ([{"set_weight": 10.5}], "step 1: set_weight takes a whole percent 0..100, got 10.5"),
        ([{"set_weight": True}], "step 1: set_weight takes a whole percent 0..100, got True"),
        ([{"set_weight": 10}, {"pauze": "1s"}], "step 2: unknown step 'pauze'; known: set_weight, pause, analysis"),
        ([{"set_weight": 10, "pause": 1}], "step 1: a step is a mapping with one key"),
        (["set_weight"], "step 1: a step is a mapping with one key"),
        ([{"pause": "soon"}], "step 1: pause: 'soon' is not a duration (e.g. 30, 30s, 2m, 1h)"),
        ([{"pause": {"until": "1s"}}], "step 1: pause takes only `duration`, got until"),
        ([{"analysis": ""}], "step 1: analysis takes a template name"),
        (
            [{"analysis": "defualt"}],
            "step 1: unknown analysis template 'defualt'; known: default; did you mean 'default'?",
        ),
        ("set_weight 10", "a list of steps"),
    ],
)
def test_bad_steps_fail_at_load_in_one_line(steps, message):
    with pytest.raises(ConfigError) as err:
        load(steps)
    text = str(err.value)
    assert message in text and "\n" not in text and "rollout.steps" in text


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ConfigError, match="rollout.strategy: Input should be 'rolling' or 'canary'"):
        load_settings(None, {"rollout": {"strategy": "blue-green"}}, environ={})


def test_durations():
    assert duration_s("500ms") == 0.5 and duration_s("1h") == 3600 and duration_s(3) == 3.0
    with pytest.raises(ValueError):
        duration_s(-1)


def test_haproxy_config_splits_by_weight_and_names_its_admin_socket(tmp_path):
    split = haproxy.Split("prod", "127.0.0.1", 8701, "127.0.0.1:9001", "127.0.0.1:9002", 10)
    text = haproxy.render(split, tmp_path / "s.sock")
    assert f"stats socket {tmp_path / 's.sock'} mode 600 level admin" in text
    assert "bind 127.0.0.1:8701" in text
    assert "server stable 127.0.0.1:9001 weight 90 check" in text
    assert "server canary 127.0.0.1:9002 weight 10 check" in text
    assert haproxy.weights(0) == (100, 0) and haproxy.weights(100) == (0, 100)


def test_missing_haproxy_is_one_line_naming_the_package():
    with pytest.raises(ConfigError) as err:
        haproxy.haproxy_binary("haproxy-that-is-not-installed")
    assert "apt-get install haproxy" in str(err.value) and "\n" not in str(err.value)


def test_a_target_without_canaries_refuses_the_canary_strategy_in_one_line(tmp_path, monkeypatch):
    from mlops_cli import targets
    from mlops_cli.canary.engine import rolling_update_canary
    from mlops_cli.state import State

    class NoCanaries:  # every built-in target runs canaries: a target of a plugin may not
        needs_image = False

    monkeypatch.setattr(targets, "get_target", lambda name, settings: NoCanaries())
    s = load_settings(None, {"workdir": str(tmp_path), "rollout": {"strategy": "canary"}}, environ={})
    with pytest.raises(ConfigError) as err:
        rolling_update_canary(s, State(), None)
    assert str(err.value) == "the local target does not do canary releases (set rollout.strategy rolling)"
    assert err.value.exit_code == 2
