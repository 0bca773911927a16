"""`mlops render`: manifests for both flavours, strictly valid, carrying what the issue asks of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO, run_cli
from kubernetes_validate import utils as kv
from kubetools import REPOSITORY, digest_ref

from mlops_cli import render
from mlops_cli.errors import PrerequisiteError, StageFailed, UsageError
from mlops_cli.state import State

pytestmark = pytest.mark.integration


def load_dir(out: Path) -> dict[str, dict]:
    docs = {}
    for path in sorted(out.glob("0*.yaml")):
        doc = yaml.safe_load(path.read_text())
        docs[doc["kind"]] = doc
    return docs


@pytest.mark.parametrize("flavour, front", [("openshift", "Route"), ("kubernetes", "Ingress")])
def test_render_writes_strictly_valid_manifests_for_both_flavours(shipped, kube_settings, tmp_path, flavour, front):
    settings = kube_settings(
        model=shipped.model, kubernetes={"flavour": flavour, "hosts": {"prod": "iris.example.com"}}
    )
    result = render.run(settings, "prod", tmp_path / "out")
    docs = load_dir(tmp_path / "out")
    assert set(docs) == {
        "Deployment",
        "Service",
        front,
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ServiceAccount",
        "NetworkPolicy",
    }
    for kind, doc in docs.items():
        assert doc["metadata"]["namespace"] == "mlops-prod"
        if kind not in ("Route", "ServiceMonitor"):
            assert kv.validate(doc, settings.kubernetes.kubernetes_version, strict=True)  # again, from the files
    kustomization = yaml.safe_load((tmp_path / "out" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [Path(f).name for f in result.files[:-1]]
    if front == "Route":
        assert docs["Route"]["spec"]["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
        assert docs["Route"]["spec"]["host"] == "iris.example.com"
    else:
        assert docs["Ingress"]["spec"]["rules"][0]["host"] == "iris.example.com"


def test_deployment_rolls_with_no_gap_and_passes_restricted_v2(shipped, kube_settings, tmp_path):
    render.run(shipped, "test", tmp_path / "out")
    dep = load_dir(tmp_path / "out")["Deployment"]
    spec = dep["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == digest_ref("a")
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 300
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] > 5
    assert set(container["resources"]) == {"requests", "limits"}
    # OpenShift's restricted-v2 SCC: non-root with no fixed UID, no escalation, no capabilities, RuntimeDefault seccomp
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    sc = container["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "runAsUser" not in str(dep)
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
    state = State.load(shipped.workdir)
    notes = dep["metadata"]["annotations"]
    assert notes["mlops.io/model-name"] == "iris" and notes["mlops.io/model-version"] == state.model.version
    assert notes["mlops.io/model-sha256"] == state.model.sha256
    assert state.model.ref in notes["kubernetes.io/change-cause"]


def test_hpa_on_cpu_and_optionally_a_prometheus_metric(shipped, kube_settings, tmp_path):
    settings = kube_settings(
        model=shipped.model,
        kubernetes={
            "min_replicas": 3,
            "max_replicas": 9,
            "custom_metric": {"name": "mlops_http_requests_per_second", "target_average_value": "20"},
        },
    )
    render.run(settings, "prod", tmp_path / "out")
    hpa = load_dir(tmp_path / "out")["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    cpu, custom = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu" and cpu["resource"]["target"]["averageUtilization"] == 70
    assert custom["pods"]["metric"]["name"] == "mlops_http_requests_per_second"
    monitor = load_dir(tmp_path / "out")["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # the label deploy/monitoring's rules select serving targets by (up{mlops_role="serving"})
    assert {"action": "replace", "targetLabel": "mlops_role", "replacement": "serving"} in monitor["spec"]["endpoints"][
        0
    ]["relabelings"]
    rules = (REPO / "deploy" / "monitoring" / "mlops-rules.yml").read_text()
    assert 'mlops_role="serving"' in rules


def test_validation_catches_what_kubectl_would_refuse(shipped):
    rendered = render.render(shipped, State.load(shipped.workdir), "prod")
    render.validate(rendered.manifests, "1.30")
    broken = copy.deepcopy(rendered.manifests)
    broken[0]["spec"]["strategy"]["rollingUpdate"]["maxSurgee"] = 1  # an unknown field (strict)
    with pytest.raises(StageFailed, match="Deployment/iris: spec.strategy.rollingUpdate: Additional properties"):
        render.validate(broken, "1.30")
    route = next(m for m in copy.deepcopy(rendered.manifests) if m["kind"] == "Route")
    route["spec"]["host"] = "Not A Host"
    with pytest.raises(StageFailed, match="Route/iris: spec.host"):
        render.validate([route], "1.30")
    monitor = next(m for m in copy.deepcopy(rendered.manifests) if m["kind"] == "ServiceMonitor")
    del monitor["spec"]["endpoints"]
    with pytest.raises(StageFailed, match="ServiceMonitor/iris: spec: 'endpoints' is a required property"):
        render.validate([monitor], "1.30")


def test_image_override_by_digest_and_moving_tags(shipped, tmp_path):
    other = f"{REPOSITORY}@sha256:{'f' * 64}"
    assert render.run(shipped, "prod", tmp_path / "a", image=other).image == other
    with pytest.raises(UsageError, match="moving tag: production takes an image pinned by digest.*--allow-tag"):
        render.run(shipped, "prod", tmp_path / "b", image=f"{REPOSITORY}:latest")
    assert render.run(shipped, "prod", tmp_path / "c", image=f"{REPOSITORY}:latest", allow_tag=True).image.endswith(
        ":latest"
    )
    assert render.run(shipped, "test", tmp_path / "d", image=f"{REPOSITORY}:1.2").image.endswith(":1.2")
    with pytest.raises(UsageError, match="is not an image reference"):
        render.run(shipped, "test", tmp_path / "e", image="Not An Image@x")


def test_cli_refuses_a_moving_tag_for_prod_in_one_line(shipped, tmp_path):
    args = ["render", "--workdir", str(shipped.workdir), "--env", "prod", "--out", str(tmp_path / "out")]
    refused = run_cli(*args, "--image", f"{REPOSITORY}:latest")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in refused.stderr
    assert "--allow-tag" in refused.stderr
    allowed = run_cli(*args, "--image", f"{REPOSITORY}:latest", "--allow-tag", "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "out" / "01-deployment.yaml").is_file()


def test_no_image_in_state_says_to_run_build_image(shipped, tmp_path):
    state = State.load(shipped.workdir)
    state.image = None
    state.save(shipped.workdir)
    with pytest.raises(PrerequisiteError, match="run `mlops build-image` first"):
        render.run(shipped, "prod", tmp_path / "out")
    done = run_cli(
        "deploy-test",
        "--workdir",
        str(shipped.workdir),
        env={"MLOPS_DEPLOY__TARGET": "kubernetes", "KUBECONFIG": str(tmp_path / "none")},
    )
    assert done.returncode == 3 and "run `mlops build-image` first" in done.stderr


def test_unknown_environment_and_flavour(shipped, kube_settings, tmp_path):
    from mlops_cli.errors import ConfigError

    with pytest.raises(UsageError, match="unknown environment 'stage'"):
        render.run(shipped, "stage", tmp_path / "out")
    with pytest.raises(ConfigError, match="kubernetes.flavour"):
        kube_settings(kubernetes={"flavour": "nomad"})


def test_out_must_be_a_directory(shipped, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="--out .* is not a directory"):
        render.run(shipped, "prod", tmp_path / "file")


def test_a_moving_tag_is_pulled_every_time_a_digest_only_when_missing(shipped, tmp_path):
    def pull_policy(out, image):
        render.run(shipped, "test", out, image=image)
        return load_dir(out)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"]

    assert pull_policy(tmp_path / "tag", f"{REPOSITORY}:1.2") == "Always"  # a node's cached 1.2 may be stale
    assert pull_policy(tmp_path / "digest", digest_ref("a")) == "IfNotPresent"


def test_grace_period_must_outlast_the_prestop_pause_and_the_servers_drain(shipped, kube_settings, tmp_path):
    from mlops_cli.errors import ConfigError

    spec = json.loads((Path(State.load(shipped.workdir).bundle.path) / "spec.json").read_text())
    drain = spec["server"]["drain_seconds"]
    short = kube_settings(model=shipped.model, kubernetes={"prestop_sleep_s": 10, "termination_grace_s": 10})
    with pytest.raises(
        ConfigError,
        match=r"termination_grace_s \(10\) must be longer than .*prestop_sleep_s \(10\) "
        rf"plus the server's drain \({drain:g} s\)",
    ):
        render.run(short, "test", tmp_path / "a")
    done = run_cli(
        "render",
        "--workdir",
        str(shipped.workdir),
        "--env",
        "test",
        "--out",
        str(tmp_path / "b"),
        env={"MLOPS_KUBERNETES__PRESTOP_SLEEP_S": "30", "MLOPS_KUBERNETES__TERMINATION_GRACE_S": "30"},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: kubernetes.termination_grace_s (30)")
    ok = kube_settings(model=shipped.model, kubernetes={"prestop_sleep_s": 10, "termination_grace_s": 20})
    render.run(ok, "test", tmp_path / "c")
    assert load_dir(tmp_path / "c")["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 20


def test_replicas_must_lie_within_the_autoscalers_bounds(kube_settings):
    from mlops_cli.errors import ConfigError

    with pytest.raises(ConfigError, match=r"replicas \(6\) is above max_replicas \(5\)"):
        kube_settings(kubernetes={"replicas": 6})
    with pytest.raises(ConfigError, match=r"min_replicas \(3\) is above max_replicas \(2\)"):
        kube_settings(kubernetes={"min_replicas": 3, "max_replicas": 2, "replicas": 2})


def test_pods_have_their_own_account_pull_secrets_spread_and_a_network_policy(shipped, kube_settings, tmp_path):
    render.run(shipped, "prod", tmp_path / "default")
    docs = load_dir(tmp_path / "default")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "iris" and docs["ServiceAccount"]["metadata"]["name"] == "iris"
    assert docs["ServiceAccount"]["automountServiceAccountToken"] is False and "imagePullSecrets" not in pod
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    assert {c["whenUnsatisfiable"] for c in pod["topologySpreadConstraints"]} == {"ScheduleAnyway"}
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"] and policy["ingress"][0]["ports"] == [
        {"port": "http", "protocol": "TCP"}
    ]
    allowed = policy["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert "openshift-ingress" in allowed and "openshift-user-workload-monitoring" in allowed

    settings = kube_settings(
        model=shipped.model,
        kubernetes={
            "flavour": "kubernetes",
            "service_account": "shared-sa",
            "image_pull_secrets": ["quay-pull"],
            "topology_spread": False,
            "network_policy_from": ["nginx", "prometheus"],
        },
    )
    render.run(settings, "prod", tmp_path / "custom")
    docs = load_dir(tmp_path / "custom")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert "ServiceAccount" not in docs and pod["serviceAccountName"] == "shared-sa"
    assert pod["imagePullSecrets"] == [{"name": "quay-pull"}] and "topologySpreadConstraints" not in pod
    assert docs["NetworkPolicy"]["spec"]["ingress"][0]["from"] == [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["nginx", "prometheus"]}
                ]
            }
        }
    ]
    render.run(kube_settings(model=shipped.model, kubernetes={"network_policy": False}), "prod", tmp_path / "none")
    assert "NetworkPolicy" not in load_dir(tmp_path / "none")


def test_memory_limit_must_hold_what_the_servers_bounds_let_it_use(shipped, kube_settings, tmp_path):
    """Issue 10: the default request/limit fit the default bounds; a smaller limit is a config error."""
    from mlops_cli.errors import ConfigError

    render.run(kube_settings(model=shipped.model), "test", tmp_path / "a")
    resources = load_dir(tmp_path / "a")["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == "320Mi" and resources["limits"]["memory"] == "512Mi"
    needed = render.memory_needed_mib(kube_settings(model=shipped.model), State.load(shipped.workdir))
    assert 271 <= needed <= 320  # 150 baseline + model + 1 MiB x 25 + 8 MiB x 4 + 64
    small = kube_settings(model=shipped.model, kubernetes={"resources": {"memory_limit": "256Mi"}})
    with pytest.raises(ConfigError, match=r"memory_limit \(256Mi\) is below the 2\d\dMi the server may use"):
        render.run(small, "test", tmp_path / "b")
    done = run_cli(
        "render",
        "--workdir",
        str(shipped.workdir),
        "--env",
        "test",
        "--out",
        str(tmp_path / "c"),
        env={"MLOPS_KUBERNETES__RESOURCES__MEMORY_LIMIT": "0.25Gi"},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: kubernetes.resources.memory_limit (0.25Gi)")
