"""The kubernetes target through the real `mlops` command: exit codes, JSON, progress, no secret shown."""

from __future__ import annotations

import json

import pytest
from helpers import read_state, run_cli
from kubetools import digest_ref, set_image, set_smoke_passed

pytestmark = pytest.mark.integration


def mlops(kube, workdir, *args, **env):
    environ = {
        "MLOPS_DEPLOY__TARGET": "kubernetes",
        "MLOPS_KUBERNETES__SERVER": kube.url,
        "MLOPS_KUBERNETES__TOKEN": kube.token,
        "MLOPS_KUBERNETES__INSECURE": "true",
        "MLOPS_KUBERNETES__POLL_INTERVAL_S": "0.005",
        "MLOPS_KUBERNETES__PROGRESS_DEADLINE_S": "30",
        **env,
    }
    done = run_cli(*args, "--workdir", str(workdir), env=environ)
    assert kube.token not in done.stdout + done.stderr
    return done


def test_deploy_update_fail_and_roll_back_from_the_command_line(kube, shipped):
    done = mlops(kube, shipped.workdir, "deploy-test", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["url"] == "https://iris-mlops-test.apps.cluster.test"
    set_smoke_passed(shipped)
    done = mlops(kube, shipped.workdir, "rolling-update")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "prod: revision 1 ready at https://iris-mlops-prod.apps.cluster.test"

    kube.image_modes["sha256:" + "b" * 8] = "pull-error"
    set_image(shipped, digest_ref("b"))
    set_smoke_passed(shipped)
    done = mlops(kube, shipped.workdir, "rolling-update", "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert "rolled back to the previous revision" in error["error"] and error["exit_code"] == 1
    assert 'ImagePullBackOff: Back-off pulling image "registry.example.test/ml/iris@sha256:bbbb' in done.stderr
    assert "rolling mlops-prod/iris back" in done.stderr
    assert kube.running_images("mlops-prod", "iris") == [digest_ref("a")] * 2

    done = mlops(kube, shipped.workdir, "rollback", "--env", "prod", "--json")
    assert done.returncode == 1  # revision 3 is revision 1 again; before it is the failed revision 2
    assert "rolling back to revision 2 failed" in done.stderr and "serves again as revision 5" in done.stderr
    assert kube.deployment("mlops-prod", "iris")["spec"]["template"]["spec"]["containers"][0]["image"] == digest_ref(
        "a"
    )
    assert kube.running_images("mlops-prod", "iris") == [digest_ref("a")] * 2
    assert read_state(shipped.workdir)["deployments"]["prod"]["revision"] == 5
    kube.image_modes.clear()
    done = mlops(kube, shipped.workdir, "rollback", "--env", "prod", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["image"] == digest_ref("b")
    state = read_state(shipped.workdir)
    # digest b never served as a deployment this workdir recorded, so state does not claim to know its bundle
    assert "prod" not in state["deployments"]
    assert (state["rollouts"]["prod"]["image"], state["rollouts"]["prod"]["previous_image"]) == (
        digest_ref("b"),
        digest_ref("a"),
    )

    done = mlops(kube, shipped.workdir, "status")
    assert "rollout    prod: succeeded (revision 5 -> 6)" in done.stdout


def test_unsupported_kubernetes_version_for_validation(kube, shipped):
    done = mlops(kube, shipped.workdir, "deploy-test", MLOPS_KUBERNETES__KUBERNETES_VERSION="1.99")
    assert done.returncode == 2 and "does not support version 1.99" in done.stderr
    done = mlops(kube, shipped.workdir, "deploy-test", MLOPS_KUBERNETES__KUBERNETES_VERSION="latest")
    assert done.returncode == 2 and "kubernetes.kubernetes_version" in done.stderr


def test_a_field_manager_conflict_is_one_line_and_force_takes_the_fields(kube, shipped):
    assert mlops(kube, shipped.workdir, "deploy-test").returncode == 0
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "iris"},
        "spec": {"maxReplicas": 8},
    }  # a platform team's own apply, outside the pipeline
    code, _ = kube.handle(
        "PATCH",
        "/apis/autoscaling/v2/namespaces/mlops-test/horizontalpodautoscalers/iris"
        "?fieldManager=argocd-controller&force=true",
        "application/apply-patch+yaml",
        f"Bearer {kube.token}",
        json.dumps(hpa).encode(),
    )
    assert code == 200
    done = mlops(kube, shipped.workdir, "deploy-test")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: HorizontalPodAutoscaler mlops-test/iris: another field manager owns fields")
        and '"argocd-controller" owns .spec.maxReplicas' in last
        and "--force" in last
    )
    done = mlops(kube, shipped.workdir, "deploy-test", "--force")
    assert done.returncode == 0, done.stderr
    live = kube.objects[("autoscaling", "horizontalpodautoscalers", "mlops-test", "iris")]
    assert live["spec"]["maxReplicas"] == 5
    assert {m["manager"] for m in live["metadata"]["managedFields"]} == {"mlops"}
