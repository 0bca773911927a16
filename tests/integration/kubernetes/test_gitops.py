"""GitOps output: `mlops render` without pipeline state, and `render --kustomize`, whose overlays give,
through the real `kubectl kustomize`, exactly the objects `mlops render --env` writes (no drift)."""

from __future__ import annotations

import filecmp
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import REPO, register_iris, require_tool, run_cli
from kubetools import REPOSITORY, digest_ref

from mlops_cli import gitops, render
from mlops_cli.config import load_settings

pytestmark = pytest.mark.integration
EXAMPLE = REPO / "deploy" / "kustomize"
EXAMPLE_IMAGE = "quay.io/example/iris@sha256:" + "0" * 64


def objects(docs) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


def rendered_dir(out: Path) -> dict[tuple[str, str], dict]:
    return objects(yaml.safe_load(p.read_text()) for p in sorted(out.glob("0*.yaml")))


def kustomize(folder: Path) -> dict[tuple[str, str], dict]:
    kubectl = require_tool("kubectl")
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return objects(yaml.safe_load_all(done.stdout))


def test_render_from_an_image_digest_alone_needs_no_pipeline_state(tmp_path):
    empty = tmp_path / "no-state"
    image = digest_ref("e")
    done = run_cli("render", "--workdir", str(empty), "--env", "prod", "--out", str(tmp_path / "out"), "--image", image)
    assert done.returncode == 0, done.stderr
    docs = rendered_dir(tmp_path / "out")
    dep = docs[("Deployment", "iris")]  # named after the image's repository
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == image
    notes = dep["metadata"]["annotations"]
    assert notes["mlops.io/image"] == image and "mlops.io/model-sha256" not in notes  # nothing made up
    assert notes["kubernetes.io/change-cause"] == f"mlops: {image}"
    assert not (empty / "state.json").exists()

    nothing = run_cli("render", "--workdir", str(empty), "--env", "prod", "--out", str(tmp_path / "x"))
    assert nothing.returncode == 3 and "Traceback" not in nothing.stderr
    assert nothing.stderr.strip().splitlines()[-1].startswith("error: nothing to render: no validated model in state")
    no_env = run_cli("render", "--workdir", str(empty), "--out", str(tmp_path / "y"), "--image", image)
    assert no_env.returncode == 2 and "--env is required" in no_env.stderr
    both = run_cli(
        "render",
        "--workdir",
        str(empty),
        "--env",
        "prod",
        "--kustomize",
        "--out",
        str(tmp_path / "z"),
        "--image",
        image,
    )
    assert both.returncode == 2 and "not both" in both.stderr and not (tmp_path / "z").exists()


def test_render_from_a_model_reference_labels_the_objects_with_its_metadata(kube_settings, iris_artifact, tmp_path):
    settings = kube_settings()
    ref = register_iris(settings, iris_artifact)  # in the local store; no validate-model, no state
    store = settings.store_path
    image = digest_ref("d")
    args = [
        "render",
        "--workdir",
        str(tmp_path / "empty"),
        "--env",
        "test",
        "--out",
        str(tmp_path / "out"),
        "--model",
        ref,
    ]
    env = {"MLOPS_STORE__PATH": str(store)}
    done = run_cli(*args, "--image", image, env=env)
    assert done.returncode == 0, done.stderr
    dep = rendered_dir(tmp_path / "out")[("Deployment", "iris")]
    notes = dep["metadata"]["annotations"]
    assert notes["mlops.io/model-name"] == "iris" and notes["mlops.io/model-ref"] == "local:iris@1"
    assert len(notes["mlops.io/model-sha256"]) == 64 and dep["metadata"]["labels"]["app.kubernetes.io/version"] == "1"
    without_image = run_cli(*args, env=env)
    assert without_image.returncode == 2 and "give --image" in without_image.stderr
    unknown = run_cli(*args[:-1], "local:nosuch@1", "--image", image, env=env)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr


@pytest.mark.parametrize("flavour", ["openshift", "kubernetes"])
def test_kustomize_overlays_give_exactly_what_render_gives(kube_settings, shipped, tmp_path, flavour):
    settings = kube_settings(
        model=shipped.model,
        kubernetes={
            "flavour": flavour,
            "hosts": {"test": "iris.test.example.com", "prod": "iris.example.com"},
            "image_pull_secrets": ["pull"],
            "relay_image": f"{REPOSITORY}-relay@sha256:{'9' * 64}",
        },
    )
    gitops.run(settings, tmp_path / "k")
    for env in ("test", "prod"):
        render.run(settings, env, tmp_path / env)
        expected = rendered_dir(tmp_path / env)
        assert kustomize(tmp_path / "k" / "overlays" / env) == expected
        assert {m["metadata"]["namespace"] for m in expected.values()} == {f"mlops-{env}"}
    prod = yaml.safe_load((tmp_path / "k" / "overlays" / "prod" / "kustomization.yaml").read_text())
    assert prod["resources"] == ["../../base"] and prod["namespace"] == "mlops-prod"
    assert all(p["path"].startswith("patch-") for p in prod["patches"])  # only what differs is in the overlay
    monitoring = kustomize(tmp_path / "k" / "monitoring")
    assert {kind for kind, _ in monitoring} == {
        "PrometheusRule",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }


def test_the_shipped_kustomize_example_is_what_mlops_generates(tmp_path):
    """deploy/kustomize/ is generated (see its README): regenerating it gives the same files."""
    settings = load_settings(EXAMPLE / "mlops.yaml", {"workdir": tmp_path / "empty"}, environ={})
    gitops.run(settings, tmp_path / "k", image=EXAMPLE_IMAGE)
    for folder in ("base", "overlays/test", "overlays/prod", "monitoring"):
        ours, shipped = tmp_path / "k" / folder, EXAMPLE / folder
        names = sorted(p.name for p in ours.iterdir())
        assert names == sorted(p.name for p in shipped.iterdir() if p.suffix == ".yaml"), folder
        _, mismatch, errors = filecmp.cmpfiles(ours, shipped, names, shallow=False)
        assert (mismatch, errors) == ([], []), f"deploy/kustomize/{folder} is stale: regenerate it (its README)"


def test_monitoring_objects_dashboards_rule_and_a_relay_that_runs_on_its_own_settings(tmp_path):
    settings = load_settings(EXAMPLE / "mlops.yaml", {"workdir": tmp_path / "empty"}, environ={})
    manifests = objects(gitops.monitoring_manifests(settings))
    render.validate(list(manifests.values()), "1.30")
    dashboards = {name: m for (kind, name), m in manifests.items() if name.startswith("grafana-dashboard-")}
    assert set(dashboards) == {f"grafana-dashboard-{p.stem}" for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    for m in dashboards.values():
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((filename, text),) = m["data"].items()
        assert text == (REPO / "grafana" / "dashboards" / filename).read_text()
    rule = manifests[("PrometheusRule", "mlops-rules")]
    assert rule["spec"] == yaml.safe_load((REPO / "deploy" / "monitoring" / "prometheusrule.yaml").read_text())["spec"]
    # the Service is what the shipped Alertmanager config posts to
    url = yaml.safe_load((REPO / "deploy" / "monitoring" / "alertmanager-relay.yml").read_text())["receivers"][0][
        "webhook_configs"
    ][0]["url"]
    service = manifests[("Service", "mlops-alert-relay")]
    # https to <service>.<namespace>.svc: the name OpenShift's service serving certificate is made for
    # (the shipped file names the namespace `mlops`, to be changed to where the relay runs)
    assert re.match(
        rf"https://{service['metadata']['name']}\.[a-z0-9-]+\.svc:{service['spec']['ports'][0]['port']}/", url
    )
    # the relay pod's settings (ConfigMap + env, the Secret's files) load into the CLI's own settings
    pod = manifests[("Deployment", "mlops-alert-relay")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["mlops", "alert-relay"]
    environ = dict(manifests[("ConfigMap", "mlops-alert-relay")]["data"])
    environ.update({e["name"]: e["value"] for e in container["env"]})
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("t0ken")
    (secret / "slack-webhook-url").write_text("https://hooks.slack.com/services/T/B/x")
    environ = {k: v.replace("/etc/mlops-relay", str(secret)) for k, v in environ.items()}
    relay_settings = load_settings(None, {}, environ=environ)
    assert relay_settings.relay.sinks == ["slack", "kafka"] and relay_settings.relay.token_value() == "t0ken"
    assert relay_settings.notify.kafka.bootstrap_servers == ["kafka-bootstrap.kafka.svc:9092"]
    assert str(relay_settings.relay.queue_dir).startswith("/var/lib/mlops-relay")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/mlops-relay", "/var/lib/mlops-relay", "/tmp"} <= mounts
