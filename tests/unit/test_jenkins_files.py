"""deploy/jenkins and the Jenkinsfile agree: parameters, credential IDs, the agent's pod and its RBAC."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import REPO, require_module

JENKINS = REPO / "deploy" / "jenkins"
JENKINSFILE = (REPO / "Jenkinsfile").read_text()


def jenkinsfile_params() -> list[str]:
    block = JENKINSFILE[JENKINSFILE.index("    parameters {") : JENKINSFILE.index("    options {")]
    return re.findall(r"string\(name: '([A-Z_]+)'", block)


def test_the_job_dsl_declares_the_jenkinsfile_parameters():
    dsl = (JENKINS / "jobs" / "mlops_release.groovy").read_text()
    assert (
        re.findall(r"stringParam\('([A-Z_]+)'", dsl)
        == jenkinsfile_params()
        == ["MODEL_REF", "TARGET", "REQUESTED_BY", "SLACK_CHANNEL", "SLACK_THREAD_TS", "AGENT_LABEL"]
    )
    assert "scriptPath('Jenkinsfile')" in dsl


def test_every_credential_the_jenkinsfile_binds_is_defined_in_casc():
    ids = set(re.findall(r"credentialsId: '([a-z0-9-]+)'", JENKINSFILE))
    assert ids == {
        "mlops-registry",
        "mlops-cluster-token",
        "mlops-clearml",
        "mlops-s3",
        "mlops-slack-bot-token",
        "mlops-slack-webhook",
    }
    casc = yaml.safe_load((JENKINS / "casc.yaml").read_text())
    defined = {
        next(iter(c.values()))["id"] for c in casc["credentials"]["system"]["domainCredentials"][0]["credentials"]
    }
    assert defined == ids | {"mlops-git"}  # and the repository's, for the job's checkout
    # every variable a credential is bound to is an mlops setting
    from mlops_cli.config import load_settings

    variables = re.findall(r"(?:variable|usernameVariable|passwordVariable): '(MLOPS_[A-Z0-9_]+)'", JENKINSFILE)
    assert len(variables) == 9
    load_settings(None, {}, environ={v: "x" for v in variables})  # an unknown MLOPS_ variable would raise


def test_the_pod_template_has_one_jnlp_container_and_a_label_the_jenkinsfile_uses():
    pod = yaml.safe_load((JENKINS / "agent" / "pod.yaml").read_text())
    assert [c["name"] for c in pod["spec"]["containers"]] == ["jnlp"]
    casc = yaml.safe_load((JENKINS / "casc.yaml").read_text())
    (template,) = casc["jenkins"]["clouds"][0]["kubernetes"]["templates"]
    assert template["label"] == "mlops-agent" and "'mlops-agent'" in JENKINSFILE
    assert template["serviceAccount"] == pod["spec"]["serviceAccountName"]


@pytest.mark.parametrize("path", ["agent/pod.yaml", "openshift/rbac.yaml"])
def test_the_manifests_are_valid_kubernetes_objects(path):
    kv = require_module("kubernetes_validate.utils", "validates the manifests offline")
    for doc in yaml.safe_load_all((JENKINS / path).read_text()):
        kv.validate(doc, "1.30", strict=True)


def test_the_deployer_role_covers_what_mlops_deploys():
    docs = list(yaml.safe_load_all((JENKINS / "openshift" / "rbac.yaml").read_text()))
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:  # RBAC rules add up
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                granted.setdefault((g, r), set()).update(rule["verbs"])
    # every kind the kubernetes target applies (its APPLY_ORDER; a new kind without an entry here fails)
    from mlops_cli.targets.kubernetes import APPLY_ORDER

    api = {
        "ServiceAccount": ("", "serviceaccounts"),
        "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
        "Service": ("", "services"),
        "Route": ("route.openshift.io", "routes"),
        "Ingress": ("networking.k8s.io", "ingresses"),
        "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
        "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
        "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors"),
        "Deployment": ("apps", "deployments"),
        "HTTPRoute": ("gateway.networking.k8s.io", "httproutes"),
    }
    for kind in APPLY_ORDER:
        assert {"get", "create", "patch"} <= granted.get(api[kind], set()), kind
    # a canary release deletes its own objects (mlops_cli/targets/kubecanary.py)
    for kind in ("Deployment", "Service", "NetworkPolicy", "Ingress"):
        assert "delete" in granted.get(api[kind], set()), kind
    assert "list" in granted[("apps", "replicasets")] and "list" in granted[("", "pods")]
    bound = {
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "mlops-deployer"
    }
    assert bound == {"mlops-test", "mlops-prod"}
