"""kubernetes.traffic_router: the flavour's default, and the combinations that cannot work refused in one line."""

from __future__ import annotations

import pytest

from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError
from mlops_cli.render import ROUTER_TEMPLATES, split


@pytest.mark.parametrize(
    "kubernetes, router",
    [
        ({}, "route"),
        ({"flavour": "kubernetes"}, "nginx"),
        ({"flavour": "kubernetes", "traffic_router": "gateway", "gateway": "infra/public"}, "gateway"),
        ({"traffic_router": "gateway", "gateway": "public"}, "gateway"),  # OpenShift's Gateway API too
    ],
)
def test_the_router_in_effect(kubernetes, router):
    settings = load_settings(None, {"kubernetes": kubernetes}, environ={})
    assert settings.kubernetes.router == router and router in ROUTER_TEMPLATES


@pytest.mark.parametrize(
    "kubernetes, message",
    [
        ({"flavour": "kubernetes", "traffic_router": "route"}, "traffic_router route is an OpenShift Route"),
        ({"flavour": "kubernetes", "traffic_router": "gateway"}, "needs kubernetes.gateway"),
        ({"traffic_router": "haproxy"}, "traffic_router"),
        ({"traffic_router": "gateway", "gateway": "Not/A/Name"}, "gateway"),
        ({"canary_replicas": 0}, "canary_replicas"),
    ],
)
def test_impossible_router_settings_are_one_line_config_errors(kubernetes, message):
    with pytest.raises(ConfigError) as error:
        load_settings(None, {"kubernetes": kubernetes}, environ={})
    assert message in error.value.message and "\n" not in error.value.message


def test_the_split_values_add_up_to_100_and_name_the_parent_gateway():
    settings = load_settings(None, {"kubernetes": {"traffic_router": "gateway", "gateway": "infra/public"}}, environ={})
    values = split(settings, "iris", "iris-canary", 30)
    assert [r["weight"] for r in values["backend_refs"]] == [70, 30]
    assert (values["stable_weight"], values["canary_weight"]) == (70, 30)
    assert values["gateway_parent_refs"] == [{"namespace": "infra", "name": "public"}]
    assert values["ingress_annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "30",
    }
    plain = split(settings, "iris", None, 0)
    assert plain["backend_refs"] == [{"name": "iris", "port": 80, "weight": 100}] and not plain["ingress_annotations"]
