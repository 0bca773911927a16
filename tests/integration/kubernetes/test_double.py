"""The API server double answers the official client as the real server does, errors included."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.integration

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "r/web@sha256:" + "1" * 64}]},
        },
    },
}


@pytest.fixture
def apps(kube):
    cfg = client.Configuration()
    cfg.host = kube.url
    api = client.ApiClient(cfg, header_name="Authorization", header_value=f"Bearer {kube.token}")
    yield client.AppsV1Api(api), client.CustomObjectsApi(api)
    api.close()


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_typed_answers_and_status_bodies(apps, kube):
    deployments, _custom = apps
    created = deployments.create_namespaced_deployment("mlops-test", DEPLOYMENT)
    assert created.metadata.generation == 1 and created.metadata.uid
    with pytest.raises(ApiException) as exists:
        deployments.create_namespaced_deployment("mlops-test", DEPLOYMENT)
    assert exists.value.status == 409 and status_of(exists.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        deployments.read_namespaced_deployment("nope", "mlops-test")
    assert status_of(missing.value)["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    with pytest.raises(ApiException) as no_ns:
        deployments.create_namespaced_deployment("elsewhere", DEPLOYMENT)
    assert status_of(no_ns.value)["details"]["kind"] == "namespaces"
    listed = deployments.list_namespaced_replica_set("mlops-test", label_selector="app=web")
    assert [rs.metadata.annotations["deployment.kubernetes.io/revision"] for rs in listed.items] == ["1"]


def test_patch_flavours_and_preconditions(apps, kube):
    deployments, custom = apps
    live = deployments.create_namespaced_deployment("mlops-test", DEPLOYMENT)
    image = "r/web@sha256:" + "2" * 64
    # a dict body with the JSON patch type is refused, as the real server refuses it
    code, body = kube.handle(
        "PATCH",
        "/apis/apps/v1/namespaces/mlops-test/deployments/web",
        "application/json-patch+json",
        f"Bearer {kube.token}",
        b"{}",
    )
    assert code == 400 and body["reason"] == "BadRequest"
    patched = deployments.patch_namespaced_deployment(
        "web", "mlops-test", {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}}
    )
    assert patched.metadata.generation == 2 and patched.spec.template.spec.containers[0].image == image
    stale = {"metadata": {"resourceVersion": live.metadata.resource_version}, "spec": {"replicas": 2}}
    with pytest.raises(ApiException) as conflict:
        deployments.patch_namespaced_deployment("web", "mlops-test", stale)
    assert conflict.value.status == 409 and "the object has been modified" in status_of(conflict.value)["message"]
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "http"}]},
    }
    custom.create_namespaced_custom_object("monitoring.coreos.com", "v1", "mlops-test", "servicemonitors", monitor)
    # a custom resource takes no strategic merge patch; a merge patch must be an object
    path = "/apis/monitoring.coreos.com/v1/namespaces/mlops-test/servicemonitors/web"
    code, body = kube.handle("PATCH", path, "application/strategic-merge-patch+json", f"Bearer {kube.token}", b"{}")
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")
    code, body = kube.handle("PATCH", path, "application/merge-patch+json", f"Bearer {kube.token}", b"[]")
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = kube.handle(
        "PATCH",
        path,
        "application/merge-patch+json",
        f"Bearer {kube.token}",
        b'{"spec": {"endpoints": [{"port": "web"}]}}',
    )
    assert code == 200 and body["spec"]["endpoints"] == [{"port": "web"}]
    assert body["spec"]["selector"] == {"matchLabels": {"app": "web"}}


def test_forbidden_names_user_verb_and_resource(apps, kube):
    deployments, _ = apps
    kube.forbidden.add(("create", "deployments"))
    with pytest.raises(ApiException) as denied:
        deployments.create_namespaced_deployment("mlops-test", DEPLOYMENT)
    assert denied.value.status == 403
    assert status_of(denied.value)["message"] == (
        'deployments.apps is forbidden: User "system:serviceaccount:ci:jenkins" cannot create resource '
        '"deployments" in API group "apps" in the namespace "mlops-test"'
    )


def test_server_side_apply_owns_removes_and_conflicts_as_the_api_server_does(apps, kube):
    deployments, custom = apps
    apply = dict(field_manager="ci", _content_type="application/apply-patch+yaml")
    body = json.loads(json.dumps(DEPLOYMENT))
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    created = deployments.patch_namespaced_deployment("web", "mlops-test", body, **apply)  # absent: created (201)
    assert created.metadata.generation == 1
    assert [(m.manager, m.operation) for m in created.metadata.managed_fields] == [("ci", "Apply")]
    fields = created.metadata.managed_fields[0].fields_v1["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(fields['k:{"name":"web"}']["f:env"]) == {'k:{"name":"A"}', 'k:{"name":"B"}'}

    # another manager's Update (a plain patch) takes the fields it changes
    deployments.patch_namespaced_deployment("web", "mlops-test", {"spec": {"replicas": 3}}, field_manager="hpa")
    # the same apply without env B: B goes, A stays; replicas (now hpa's, value 3 != 1) is a conflict
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    with pytest.raises(ApiException) as conflict:
        deployments.patch_namespaced_deployment("web", "mlops-test", body, **apply)
    status = status_of(conflict.value)
    assert (conflict.value.status, status["reason"]) == (409, "Conflict")
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "hpa" using apps/v1: .spec.replicas'
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "field": ".spec.replicas", "message": 'conflict with "hpa" using apps/v1'}
    ]
    del body["spec"]["replicas"]  # leave replicas to the other manager: no conflict, and it stays 3
    applied = deployments.patch_namespaced_deployment("web", "mlops-test", body, **apply)
    assert [e.name for e in applied.spec.template.spec.containers[0].env] == ["A"] and applied.spec.replicas == 3
    body["spec"]["replicas"] = 1
    forced = deployments.patch_namespaced_deployment("web", "mlops-test", body, force=True, **apply)
    assert forced.spec.replicas == 1
    assert {m.manager for m in forced.metadata.managed_fields} == {"ci"}  # hpa owned nothing else

    # apply needs a field manager; force only goes with apply
    path = "/apis/apps/v1/namespaces/mlops-test/deployments/web"
    code, answer = kube.handle(
        "PATCH", path, "application/apply-patch+yaml", f"Bearer {kube.token}", json.dumps(body).encode()
    )
    assert code == 422 and "fieldManager: Required value" in answer["message"]
    code, answer = kube.handle(
        "PATCH", path + "?force=true", "application/merge-patch+json", f"Bearer {kube.token}", b"{}"
    )
    assert code == 422 and "force" in answer["message"]
    # a custom resource's lists are atomic: the applied list replaces the live one
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "http"}, {"port": "x"}]},
    }
    custom.patch_namespaced_custom_object(
        "monitoring.coreos.com", "v1", "mlops-test", "servicemonitors", "web", monitor, **apply
    )
    monitor["spec"]["endpoints"] = [{"port": "http", "interval": "15s"}]
    live = custom.patch_namespaced_custom_object(
        "monitoring.coreos.com", "v1", "mlops-test", "servicemonitors", "web", monitor, **apply
    )
    assert live["spec"]["endpoints"] == [{"port": "http", "interval": "15s"}]
