"""Canary releases on the kubernetes target (issue 15), for each traffic router, against the Kubernetes API
server double (tests/doubles/kube_api.py): the canary's objects, the weights the router carries, abort,
promotion, an interrupted canary found again, and the rendered split passing strict validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kubetools import digest_ref, set_image, set_smoke_passed

from mlops_cli import render
from mlops_cli.errors import StageFailed
from mlops_cli.stages import deploy_to_test_env, rolling_update
from mlops_cli.state import State
from mlops_cli.targets import Release
from mlops_cli.targets.kubecanary import NGINX_CANARY, NGINX_WEIGHT, render_canary, stable_manifest
from mlops_cli.targets.kubernetes import KubernetesTarget

pytestmark = pytest.mark.integration
PROD = "mlops-prod"
ROUTERS = {  # router -> kubernetes settings
    "route": {"flavour": "openshift"},
    "nginx": {"flavour": "kubernetes", "traffic_router": "nginx", "ingress_class": "nginx"},
    "gateway": {"flavour": "kubernetes", "traffic_router": "gateway", "gateway": "gateways/public"},
}


class Journal:
    def __init__(self) -> None:
        self.steps: list[tuple[str, dict]] = []

    def __call__(self, step: str, **fields) -> None:
        self.steps.append((step, fields))


@pytest.fixture(params=sorted(ROUTERS))
def routed(request, shipped, kube_settings):
    """Settings for one router, with prod on digest a (rolled out as usual)."""
    settings = kube_settings(
        model=shipped.model,
        validation={"thresholds": {"accuracy": ">= 0.9"}},
        kubernetes={**ROUTERS[request.param], "hosts": {"prod": "iris.example.com"}},
    )
    flags = {
        "workdir": str(settings.workdir),
        "deploy": {"target": "kubernetes"},
        "model": shipped.model,
        "validation": {"thresholds": {"accuracy": ">= 0.9"}},
        "kubernetes": {
            **ROUTERS[request.param],
            "hosts": {"prod": "iris.example.com"},
            "server": settings.kubernetes.server,
            "insecure": True,
            "poll_interval_s": 0.005,
        },
    }
    deploy_to_test_env.run(settings)
    set_smoke_passed(settings)
    rolling_update.run(settings)
    return request.param, settings, flags


def start(settings, letter: str = "b"):
    """canary_start of digest `letter` beside prod, as the engine calls it."""
    set_image(settings, digest_ref(letter))
    state = State.load(settings.workdir)
    release = Release(bundle=Path(state.bundle.path), image=digest_ref(letter), state=state)
    target, journal = KubernetesTarget(settings), Journal()
    canary = target.canary_start("prod", release, state.deployments["prod"], journal)
    return target, canary, journal


def split(kube, router: str) -> dict[str, int]:
    """Service -> weight, as the live router object carries it."""
    if router == "route":
        spec = kube.objects[("route.openshift.io", "routes", PROD, "iris")]["spec"]
        return {
            spec["to"]["name"]: spec["to"]["weight"],
            **{b["name"]: b["weight"] for b in spec.get("alternateBackends") or []},
        }
    if router == "gateway":
        (rule,) = kube.objects[("gateway.networking.k8s.io", "httproutes", PROD, "iris")]["spec"]["rules"]
        return {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}
    canary = kube.objects.get(("networking.k8s.io", "ingresses", PROD, "iris-canary"))
    main = kube.objects[("networking.k8s.io", "ingresses", PROD, "iris")]
    assert not (main["metadata"].get("annotations") or {}).get(NGINX_CANARY)
    if canary is None:
        return {"iris": 100}
    assert canary["metadata"]["annotations"][NGINX_CANARY] == "true"
    assert canary["spec"]["rules"] == [
        {
            **main["spec"]["rules"][0],
            "http": {
                "paths": [
                    {
                        **main["spec"]["rules"][0]["http"]["paths"][0],
                        "backend": {"service": {"name": "iris-canary", "port": {"name": "http"}}},
                    }
                ]
            },
        }
    ]  # same host and path
    weight = int(canary["metadata"]["annotations"][NGINX_WEIGHT])
    return {"iris": 100 - weight, "iris-canary": weight}


def canary_objects(kube) -> set[tuple[str, str]]:
    return {(plural, name) for (_, plural, ns, name) in kube.objects if ns == PROD and name.startswith("iris-canary")}


def test_canary_start_creates_the_canary_beside_stable_at_weight_zero(kube, routed):
    router, settings, _ = routed
    _, canary, journal = start(settings)
    expected = {("deployments", "iris-canary"), ("services", "iris-canary"), ("networkpolicies", "iris-canary")}
    assert {(p, n) for p, n in canary_objects(kube) if p not in ("replicasets", "pods")} == expected | (
        {("ingresses", "iris-canary")} if router == "nginx" else set()
    )
    assert kube.running_images(PROD, "iris-canary") == [digest_ref("b")]  # canary_replicas: 1, ready
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2  # stable untouched
    dep = kube.deployment(PROD, "iris-canary")
    stable = kube.deployment(PROD, "iris")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["mlops.io/track"] == "canary"
    assert stable["spec"]["template"]["metadata"]["labels"]["mlops.io/track"] == "stable"
    # no stable object selects the canary's pods: the stable Deployment's (immutable) selector, its Service
    stable_selector = stable["spec"]["selector"]["matchLabels"]
    assert not all(pod_labels.get(k) == v for k, v in stable_selector.items())
    service = kube.objects[("", "services", PROD, "iris")]["spec"]["selector"]
    assert not all(pod_labels.get(k) == v for k, v in service.items())
    canary_service = kube.objects[("", "services", PROD, "iris-canary")]
    assert all(pod_labels.get(k) == v for k, v in canary_service["spec"]["selector"].items())
    # ... while the ServiceMonitor selects the canary's Service too, and maps the pod label to `track`
    monitor = kube.objects[("monitoring.coreos.com", "servicemonitors", PROD, "iris")]["spec"]
    assert all(canary_service["metadata"]["labels"].get(k) == v for k, v in monitor["selector"]["matchLabels"].items())
    assert {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_label_mlops_io_track"],
        "targetLabel": "track",
    } in monitor["endpoints"][0]["relabelings"]
    policy = kube.objects[("networking.k8s.io", "networkpolicies", PROD, "iris-canary")]["spec"]
    assert all(pod_labels.get(k) == v for k, v in policy["podSelector"]["matchLabels"].items())
    assert split(kube, router) == {"iris": 100, "iris-canary": 0}
    assert canary.weight == 0 and canary.canary.image == digest_ref("b") and canary.stable.image == digest_ref("a")
    assert canary.canary.selector == f'track="canary",namespace="{PROD}",service="iris-canary"'
    assert canary.stable.selector == f'track!="canary",namespace="{PROD}",service="iris"'
    assert canary.canary.metrics_url == f"http://iris-canary.{PROD}.svc/metrics"
    assert canary.url == State.load(settings.workdir).deployments["prod"].url
    assert journal.steps[0] == (
        "canary-start",
        {"instance": f"{PROD}/iris-canary", "url": canary.url, "image": digest_ref("b"), "weight": 0},
    )


def test_weight_changes_appear_in_the_router_and_abort_leaves_stable_at_100(kube, routed):
    router, settings, _ = routed
    target, canary, journal = start(settings)
    for weight in (10, 50):
        canary = target.canary_set_weight(canary, weight, journal)
        assert split(kube, router) == {"iris": 100 - weight, "iris-canary": weight}
        assert canary.weight == weight
        assert target.canary_observe("prod", State.load(settings.workdir).deployments["prod"]).weight == weight
    assert target.canary_abort(canary, journal) is None  # stable untouched: the deployment record holds
    assert split(kube, router) == {"iris": 100}
    assert canary_objects(kube) == set()  # its ReplicaSet and pods went too
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2
    assert [step for step, _ in journal.steps] == ["canary-start", "canary-weight", "canary-weight", "canary-abort"]
    assert target.canary_observe("prod", State.load(settings.workdir).deployments["prod"]) is None
    # the next rolling update applies the router object cleanly (our own earlier patch is taken back)
    set_image(settings, digest_ref("c"))
    deploy_to_test_env.run(settings)
    set_smoke_passed(settings)
    rolling_update.run(settings)
    assert split(kube, router) == {"iris": 100}


def test_promote_ends_with_one_deployment_on_the_new_digest_and_no_canary(kube, routed):
    router, settings, _ = routed
    target, canary, journal = start(settings)
    canary = target.canary_set_weight(canary, 50, journal)
    rollout = target.canary_promote(canary, journal)
    assert kube.running_images(PROD, "iris") == [digest_ref("b")] * 2
    assert canary_objects(kube) == set()
    assert split(kube, router) == {"iris": 100}
    deployments = [name for (_, plural, ns, name) in kube.objects if plural == "deployments" and ns == PROD]
    assert deployments == ["iris"]
    assert (rollout.image, rollout.revision, rollout.previous_revision) == (digest_ref("b"), 2, 1)
    assert rollout.handle == f"{PROD}/iris" and rollout.url == canary.url
    # promotion applied what a rolling update of that release applies: the annotations name the new image
    dep = kube.deployment(PROD, "iris")
    assert dep["metadata"]["annotations"]["mlops.io/image"] == digest_ref("b")
    assert dep["spec"]["template"]["metadata"]["labels"]["mlops.io/track"] == "stable"
    steps = [step for step, _ in journal.steps]
    assert steps[:3] == ["canary-start", "canary-weight", "canary-promote"] and "applying" in steps
    assert steps[-1] == "canary-remove"
    applying = next(fields for step, fields in journal.steps if step == "applying")
    assert (applying["instance"], applying["url"], applying["revision"]) == (f"{PROD}/iris", canary.url, 2)


def test_a_canary_that_never_becomes_ready_is_removed_and_stable_serves(kube, routed):
    router, settings, _ = routed
    kube.image_modes["sha256:" + "d" * 8] = "crash-loop"
    settings = settings.model_copy(
        update={"kubernetes": settings.kubernetes.model_copy(update={"rollout_timeout_s": 20})}
    )
    with pytest.raises(StageFailed) as failed:
        start(settings, "d")
    assert "did not become ready" in failed.value.message and "CrashLoopBackOff" in failed.value.message
    assert canary_objects(kube) == set()
    assert split(kube, router) == {"iris": 100}
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2


def test_promotion_applies_exactly_the_release_rolling_update_would(shipped, kube_settings):
    settings = kube_settings(model=shipped.model, validation={"thresholds": {"accuracy": ">= 0.9"}})
    rendered, objects = render_canary(settings, State.load(settings.workdir), "prod", digest_ref("b"), 0)
    canary_dep = next(o for o in objects if o["kind"] == "Deployment")
    assert stable_manifest(canary_dep) == rendered.get("Deployment")


def test_canary_observe_finds_a_canary_whose_cli_was_killed(kube, routed, tmp_path):
    """kill -9 of a process in canary_start, after the canary's objects were written (test hook
    MLOPS_TEST_PAUSE_AT=canary-waiting): a new target finds the canary, at weight 0, and can abort it."""
    router, settings, flags = routed
    set_image(settings, digest_ref("b"))
    flags = {**flags, "kubernetes": {**flags["kubernetes"], "token": kube.token}}
    (tmp_path / "settings.json").write_text(json.dumps(flags), encoding="utf-8")
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from mlops_cli.config import load_settings\n"
        "from mlops_cli.state import State\n"
        "from mlops_cli.targets import Release, no_journal\n"
        "from mlops_cli.targets.kubernetes import KubernetesTarget\n"
        "settings = load_settings(None, json.loads(Path(sys.argv[1]).read_text()), environ={})\n"
        "state = State.load(settings.workdir)\n"
        "release = Release(bundle=Path(state.bundle.path), image=state.image.reference, state=state)\n"
        "KubernetesTarget(settings).canary_start('prod', release, state.deployments['prod'], no_journal)\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    environ["MLOPS_TEST_PAUSE_AT"] = "canary-waiting"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "settings.json")],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    paused, lines = threading.Event(), []

    def read() -> None:
        with proc.stderr:
            for line in proc.stderr:
                lines.append(line)
                if "paused before step canary-waiting" in line:
                    paused.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert paused.wait(90), "".join(lines)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    target = KubernetesTarget(settings)
    found = target.canary_observe("prod", State.load(settings.workdir).deployments["prod"])
    assert found is not None
    assert (found.weight, found.canary.image, found.stable.image) == (0, digest_ref("b"), digest_ref("a"))
    assert (found.canary.handle, found.stable.handle) == (f"{PROD}/iris-canary", f"{PROD}/iris")
    target.canary_abort(found, Journal())
    assert canary_objects(kube) == set() and split(kube, router) == {"iris": 100}


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_rendered_split_of_every_router_passes_strict_validation(shipped, kube_settings, router):
    from kubernetes_validate import utils as kv

    settings = kube_settings(
        model=shipped.model,
        validation={"thresholds": {"accuracy": ">= 0.9"}},
        kubernetes={**ROUTERS[router], "hosts": {"prod": "iris.example.com"}},
    )
    rendered, objects = render_canary(settings, State.load(settings.workdir), "prod", digest_ref("b"), 25)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    front = {"route": ("Route", "iris"), "nginx": ("Ingress", "iris-canary"), "gateway": ("HTTPRoute", "iris")}[router]
    assert kinds == {("Deployment", "iris-canary"), ("Service", "iris-canary"), ("NetworkPolicy", "iris-canary"), front}
    router_obj = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == front)
    if router == "route":
        assert router_obj["spec"]["to"] == {"kind": "Service", "name": "iris", "weight": 75}
        assert router_obj["spec"]["alternateBackends"] == [{"kind": "Service", "name": "iris-canary", "weight": 25}]
    elif router == "nginx":
        assert router_obj["metadata"]["annotations"] == {NGINX_CANARY: "true", NGINX_WEIGHT: "25"}
        assert kv.validate(router_obj, settings.kubernetes.kubernetes_version, strict=True)
    else:
        assert router_obj["spec"]["parentRefs"] == [{"namespace": "gateways", "name": "public"}]
        assert router_obj["spec"]["hostnames"] == ["iris.example.com"]
        assert router_obj["spec"]["rules"][0]["backendRefs"] == [
            {"name": "iris", "port": 80, "weight": 75},
            {"name": "iris-canary", "port": 80, "weight": 25},
        ]
    # the strict validation refuses what the schemas forbid: a weight out of range, an unknown field
    bad = json.loads(json.dumps(router_obj))
    if router == "route":
        bad["spec"]["alternateBackends"][0]["weight"] = 300
    elif router == "gateway":
        del bad["spec"]["rules"][0]["backendRefs"][1]["port"]  # a Service backendRef needs its port
    else:
        bad["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["weigth"] = 1
    with pytest.raises(StageFailed, match="not valid"):
        render.validate([bad], settings.kubernetes.kubernetes_version)
    # the release's own manifests with this router, too
    assert {m["kind"] for m in rendered.manifests} >= {front[0], "Deployment", "Service"}
