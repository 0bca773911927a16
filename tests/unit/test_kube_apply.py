"""Kube.apply's request and its errors, without a server: what it sends, and a one-line error for old clients."""

from __future__ import annotations

import pytest

from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError
from mlops_cli.targets.kubeapi import ApplyConflict, Kube, _conflict_owners


@pytest.fixture
def kube(tmp_path):
    settings = load_settings(
        None,
        {
            "workdir": tmp_path,
            "kubernetes": {"server": "https://127.0.0.1:1", "token": "t", "field_manager": "pipeline-x"},
        },
        environ={},
    )
    k = Kube(settings.kubernetes)
    yield k
    k.close()


def test_apply_sends_the_whole_object_as_apply_patch_with_our_field_manager(kube, monkeypatch):
    sent = {}

    def patch(name, namespace, body, field_manager=None, force=None, _content_type=None, _request_timeout=None):
        sent.update(
            name=name,
            namespace=namespace,
            body=body,
            field_manager=field_manager,
            force=force,
            content_type=_content_type,
        )
        return {"kind": "Service"}

    monkeypatch.setattr(kube, "_resolve", lambda kind, verb: ("services", patch, ()))
    assert kube.apply("Service", "ns", "web", {"kind": "Service"}, force=True) == {"kind": "Service"}
    assert sent == {
        "name": "web",
        "namespace": "ns",
        "body": {"kind": "Service"},
        "field_manager": "pipeline-x",
        "force": True,
        "content_type": "application/apply-patch+yaml",
    }


def test_a_client_that_cannot_send_apply_patches_is_a_one_line_config_error(kube, monkeypatch):
    def old_style_patch(name, namespace, body, **kwargs):  # kubernetes<=34: content type fixed by the method
        raise AssertionError("must not be called")

    monkeypatch.setattr(kube, "_resolve", lambda kind, verb: ("services", old_style_patch, ()))
    with pytest.raises(ConfigError, match=r"server-side apply needs a kubernetes client") as caught:
        kube.apply("Service", "ns", "web", {})
    assert "kubernetes>=37" in caught.value.hint and "\n" not in caught.value.message


def test_conflict_causes_name_each_manager_and_its_fields() -> None:
    details = {
        "causes": [
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "kube-controller-manager" using apps/v1',
                "field": ".spec.replicas",
            },
            {"reason": "FieldManagerConflict", "message": 'conflict with "argocd" using apps/v1', "field": ".spec.a"},
            {"reason": "FieldManagerConflict", "message": 'conflict with "argocd" using apps/v1', "field": ".spec.b"},
            {"reason": "FieldValueInvalid", "message": "not a conflict", "field": ".x"},
        ]
    }
    owners = _conflict_owners(details)
    assert owners == {"kube-controller-manager": [".spec.replicas"], "argocd": [".spec.a", ".spec.b"]}
    summary = ApplyConflict("Apply failed with 3 conflicts: ...", owners).summary()
    assert summary == '"argocd" owns .spec.a, .spec.b; "kube-controller-manager" owns .spec.replicas'
    many = ApplyConflict("x", {"m": [f".f{i}" for i in range(5)]}).summary()
    assert many == '"m" owns .f0, .f1, .f2 and 2 more'
