"""The kubernetes target against the API server double: rollouts, automatic rollback, RBAC and friends."""

from __future__ import annotations

import json

import pytest
from helpers import read_state
from kubetools import digest_ref, set_image, set_smoke_passed

from mlops_cli.errors import StageFailed, TemporaryError, UsageError
from mlops_cli.stages import deploy_to_test_env, rollback, rolling_update

pytestmark = pytest.mark.integration
TEST, PROD = "mlops-test", "mlops-prod"


def to_prod(settings) -> None:
    """deploy-test, (smoke-test's record), rolling-update of the image in state."""
    deploy_to_test_env.run(settings)
    set_smoke_passed(settings)
    rolling_update.run(settings)


def test_deploy_test_applies_every_object_and_records_the_route_url(kube, shipped):
    result = deploy_to_test_env.run(shipped)
    assert result.url == "https://iris-mlops-test.apps.cluster.test"  # the host OpenShift gave the Route
    assert result.revision == 1 and result.previous_revision is None
    dep = kube.deployment(TEST, "iris")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == digest_ref("a")
    assert dep["metadata"]["annotations"]["mlops.io/model-sha256"] == read_state(shipped.workdir)["model"]["sha256"]
    assert dep["status"]["observedGeneration"] >= dep["metadata"]["generation"]
    assert kube.running_images(TEST, "iris") == [digest_ref("a")] * 2
    # every object by server-side apply as field manager mlops: no POST, no read-then-patch
    applies = [
        (path.split("/")[-2], query)
        for (method, path, _), (_, _, query) in zip(kube.requests, kube.queries)
        if method == "PATCH"
    ]
    assert {plural for plural, _ in applies} == {
        "services",
        "deployments",
        "routes",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
        "servicemonitors",
        "serviceaccounts",
        "networkpolicies",
    }
    assert all(query["fieldManager"] == ["mlops"] and query["force"] == ["false"] for _, query in applies)
    assert {ctype for method, _, ctype in kube.requests if method == "PATCH"} == {"application/apply-patch+yaml"}
    assert not [path for method, path, _ in kube.requests if method == "POST"]
    assert [(m["manager"], m["operation"]) for m in dep["metadata"]["managedFields"]] == [("mlops", "Apply")]
    state = read_state(shipped.workdir)
    assert state["deployments"]["test"]["url"] == result.url
    assert state["deployments"]["test"]["handle"] == f"{TEST}/iris"
    assert state["stages"]["deploy-test"]["status"] == "passed"


def test_rolling_update_replaces_the_image_with_no_pod_short_and_records_revisions(kube, shipped):
    to_prod(shipped)
    assert read_state(shipped.workdir)["rollouts"]["prod"]["to_revision"] == 1
    kube.objects[("apps", "deployments", PROD, "iris")]["spec"]["replicas"] = 3  # as the HPA scales it
    set_image(shipped, digest_ref("b"))
    to_prod(shipped)
    dep = kube.deployment(PROD, "iris")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert dep["spec"]["replicas"] == 3  # the rollout left the HPA's count alone
    assert kube.running_images(PROD, "iris") == [digest_ref("b")] * 3
    rollout = read_state(shipped.workdir)["rollouts"]["prod"]
    assert (rollout["outcome"], rollout["from_revision"], rollout["to_revision"]) == ("succeeded", 1, 2)
    assert (rollout["image"], rollout["previous_image"]) == (digest_ref("b"), digest_ref("a"))
    # an existing Deployment is applied server-side, custom resources too; its replicas stay the HPA's
    patches = [
        ctype for method, path, ctype in kube.requests if method == "PATCH" and path.endswith("/deployments/iris")
    ]
    assert patches and set(patches) == {"application/apply-patch+yaml"}
    assert {ctype for method, path, ctype in kube.requests if method == "PATCH" and "servicemonitors" in path} == {
        "application/apply-patch+yaml"
    }


@pytest.mark.parametrize("mode, reason", [("pull-error", "ImagePullBackOff"), ("crash-loop", "CrashLoopBackOff")])
def test_failed_rollout_rolls_back_to_the_previous_digest(kube, shipped, mode, reason):
    to_prod(shipped)
    kube.image_modes["sha256:" + "b" * 8] = mode
    set_image(shipped, digest_ref("b"))
    deploy_test_settings = shipped
    with pytest.raises(StageFailed) as failed:
        deploy_to_test_env.run(deploy_test_settings)  # the test namespace goes back too
    assert "rolled back" in failed.value.message and reason in failed.value.message
    assert kube.running_images(TEST, "iris") == [digest_ref("a")] * 2
    set_smoke_passed(shipped)  # pretend the test passed anyway: prod must protect itself
    with pytest.raises(StageFailed) as failed:
        rolling_update.run(shipped)
    message = failed.value.message
    assert "exceeded its progress deadline" in message and reason in message and "pod iris-" in message
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2
    dep = kube.deployment(PROD, "iris")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == digest_ref("a")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"  # undo makes revision 1 the 3rd
    assert dep["metadata"]["annotations"]["mlops.io/image"] == digest_ref("a")
    state = read_state(shipped.workdir)
    assert state["deployments"]["prod"]["image"] == digest_ref("a")
    assert state["deployments"]["prod"]["revision"] == 3
    rollout = state["rollouts"]["prod"]
    assert (rollout["outcome"], rollout["from_revision"], rollout["failed_revision"], rollout["to_revision"]) == (
        "rolled-back",
        1,
        2,
        3,
    )
    assert state["stages"]["rolling-update"]["status"] == "failed"
    undo = [
        ctype
        for method, path, ctype in kube.requests
        if method == "PATCH" and path == f"/apis/apps/v1/namespaces/{PROD}/deployments/iris"
    ]
    assert undo[-1] == "application/json-patch+json"  # kubectl rollout undo's patch


def test_rollout_that_never_becomes_available_times_out_and_rolls_back(kube, shipped, kube_settings):
    to_prod(shipped)
    kube.image_modes["sha256:" + "c" * 8] = "never-ready"
    slow = kube_settings(model=shipped.model, kubernetes={"rollout_timeout_s": 0.3, "progress_deadline_s": 10**6})
    set_image(slow, digest_ref("c"))
    set_smoke_passed(slow)
    with pytest.raises(StageFailed) as failed:
        rolling_update.run(slow)
    assert "did not finish rolling out within 0.3 s" in failed.value.message
    assert "rolled back" in failed.value.message
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2


def test_first_rollout_that_fails_says_there_is_nothing_to_go_back_to(kube, shipped):
    kube.image_modes["sha256:" + "a" * 8] = "pull-error"
    with pytest.raises(StageFailed, match="no previous revision to go back to.*ErrImagePull|ImagePullBackOff"):
        deploy_to_test_env.run(shipped)


def test_rbac_refusal_names_the_verb_and_the_resource(kube, shipped):
    deploy_to_test_env.run(shipped)
    set_image(shipped, digest_ref("b"))
    kube.forbidden.add(("patch", "deployments"))
    with pytest.raises(StageFailed) as failed:
        deploy_to_test_env.run(shipped)
    text = str(failed.value)
    assert "forbidden: not allowed to patch deployments.apps in namespace mlops-test" in text
    assert 'cannot patch resource "deployments"' in text and "RBAC" in text
    assert kube.running_images(TEST, "iris") == [digest_ref("a")] * 2


def test_missing_namespace_is_named(kube, shipped, kube_settings):
    settings = kube_settings(model=shipped.model, kubernetes={"namespaces": {"test": "nosuch"}})
    with pytest.raises(UsageError, match="namespace nosuch does not exist"):
        deploy_to_test_env.run(settings)


def test_a_field_another_manager_owns_is_a_one_line_conflict_and_force_takes_it(kube, shipped, kube_settings):
    deploy_to_test_env.run(shipped)
    other = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "iris"},
        "spec": {"progressDeadlineSeconds": 45},
    }  # e.g. someone's `kubectl apply --server-side`
    code, _ = kube.handle(
        "PATCH",
        f"/apis/apps/v1/namespaces/{TEST}/deployments/iris?fieldManager=kubectl&force=true",
        "application/apply-patch+yaml",
        f"Bearer {kube.token}",
        json.dumps(other).encode(),
    )
    assert code == 200
    set_image(shipped, digest_ref("b"))
    with pytest.raises(StageFailed) as failed:
        deploy_to_test_env.run(shipped)
    message = failed.value.message
    assert message == (
        "Deployment mlops-test/iris: another field manager owns fields this apply would change: "
        '"kubectl" owns .spec.progressDeadlineSeconds'
    )
    assert "--force" in failed.value.hint
    dep = kube.deployment(TEST, "iris")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == digest_ref("a")  # nothing half-applied
    assert kube.running_images(TEST, "iris") == [digest_ref("a")] * 2

    deploy_to_test_env.run(kube_settings(model=shipped.model, kubernetes={"force_conflicts": True}))
    dep = kube.deployment(TEST, "iris")
    assert dep["spec"]["progressDeadlineSeconds"] == 30 and kube.running_images(TEST, "iris") == [digest_ref("b")] * 2
    owners = {m["manager"]: m["fieldsV1"] for m in dep["metadata"]["managedFields"]}
    assert "f:progressDeadlineSeconds" in owners["mlops"]["f:spec"] and "kubectl" not in owners  # taken over


def test_fields_our_own_rollback_wrote_are_taken_back_without_force(kube, shipped):
    to_prod(shipped)
    kube.image_modes["sha256:" + "b" * 8] = "crash-loop"
    set_image(shipped, digest_ref("b"))
    set_smoke_passed(shipped)
    with pytest.raises(StageFailed, match="rolled back"):
        rolling_update.run(shipped)
    managers = {(m["manager"], m["operation"]) for m in kube.deployment(PROD, "iris")["metadata"]["managedFields"]}
    assert ("mlops", "Update") in managers  # the undo's patch owns the template's image now
    set_image(shipped, digest_ref("c"))
    set_smoke_passed(shipped)
    rolling_update.run(shipped)
    assert kube.running_images(PROD, "iris") == [digest_ref("c")] * 2


def test_a_deployment_scaled_to_zero_by_stop_is_scaled_up_again_by_the_next_deploy(kube, shipped, capsys):
    from mlops_cli.status import stop

    deploy_to_test_env.run(shipped)
    assert stop(shipped, "test").stopped == ["test"]
    assert kube.deployment(TEST, "iris")["spec"]["replicas"] == 0  # our own Update now owns .spec.replicas
    deploy_to_test_env.run(shipped)  # no --force: the field our own scale-down wrote is taken back
    assert '("mlops" owns .spec.replicas)' in capsys.readouterr().err
    assert kube.deployment(TEST, "iris")["spec"]["replicas"] == 2
    assert kube.running_images(TEST, "iris") == [digest_ref("a")] * 2


def test_replicas_the_autoscaler_changes_between_our_read_and_our_apply_are_read_again(
    kube, shipped, monkeypatch, capsys
):
    from mlops_cli.targets.kubeapi import Kube

    deploy_to_test_env.run(shipped)
    real_get, reads = Kube.get, []

    def get_then_autoscale(self, kind, namespace, name):
        answer = real_get(self, kind, namespace, name)
        if kind == "Deployment":
            reads.append(name)
            if len(reads) == 2:  # _apply's read: the HPA scales right after it (an Update by its manager)
                code, _ = kube.handle(
                    "PATCH",
                    f"/apis/apps/v1/namespaces/{TEST}/deployments/iris?fieldManager=kube-controller-manager",
                    "application/merge-patch+json",
                    f"Bearer {kube.token}",
                    b'{"spec": {"replicas": 3}}',
                )
                assert code == 200
        return answer

    monkeypatch.setattr(Kube, "get", get_then_autoscale)
    set_image(shipped, digest_ref("b"))
    deploy_to_test_env.run(shipped)
    assert "replicas changed while we applied" in capsys.readouterr().err
    assert kube.deployment(TEST, "iris")["spec"]["replicas"] == 3  # the autoscaler's count stays
    assert kube.running_images(TEST, "iris") == [digest_ref("b")] * 3


def test_a_field_removed_from_the_template_disappears_from_the_live_object(kube, shipped, kube_settings, monkeypatch):
    from mlops_cli import render as render_mod

    deploy_to_test_env.run(shipped)
    dep = kube.deployment(TEST, "iris")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert "livenessProbe" in container and [e["name"] for e in container["env"]] == ["HOME"]
    assert "automountServiceAccountToken" in dep["spec"]["template"]["spec"]
    real_render = render_mod.render

    def render_without(*args, **kwargs):  # a newer template: no liveness probe, no env, one field less in the pod
        rendered = real_render(*args, **kwargs)
        spec = rendered.get("Deployment")["spec"]["template"]["spec"]
        del spec["containers"][0]["livenessProbe"], spec["containers"][0]["env"], spec["automountServiceAccountToken"]
        return rendered

    monkeypatch.setattr("mlops_cli.targets.kubernetes.render", render_without)
    deploy_to_test_env.run(shipped)
    dep = kube.deployment(TEST, "iris")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert "livenessProbe" not in container and "env" not in container
    assert "automountServiceAccountToken" not in dep["spec"]["template"]["spec"]
    assert "readinessProbe" in container and dep["spec"]["replicas"] == 2  # what is still applied stays
    assert kube.running_images(TEST, "iris") == [digest_ref("a")] * 2


def test_unreachable_api_server_gives_up_after_bounded_attempts(shipped, kube_settings):
    from helpers import free_port

    settings = kube_settings(
        model=shipped.model,
        kubernetes={"server": f"http://127.0.0.1:{free_port()}", "api_retries": 2, "api_timeout_s": 2},
    )
    with pytest.raises(
        TemporaryError,
        match=r"cannot reach the Kubernetes API server at http://127\.0\.0\.1:\d+.*"
        r"gave up after 3 attempts",
    ):
        deploy_to_test_env.run(settings)


def test_wrong_token_is_one_line(kube, shipped, kube_settings):
    with pytest.raises(StageFailed, match="rejected the credentials"):
        deploy_to_test_env.run(kube_settings(model=shipped.model, kubernetes={"token": "wrong"}))


def test_rollback_on_request_brings_the_previous_digest_back_and_notifies(kube, shipped, kube_settings, slack):
    settings = kube_settings(model=shipped.model, notify={"notifiers": ["slack"], "slack": {"webhook_url": slack.url}})
    to_prod(settings)
    set_image(settings, digest_ref("b"))
    to_prod(settings)
    assert [p["text"] for p in slack.posts] == [":white_check_mark: rolling-update of iris@1 to prod succeeded"] * 2
    result = rollback.run(settings, "prod")
    assert result.revision == 3 and result.previous_revision == 2 and result.image == digest_ref("a")
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2
    state = read_state(settings.workdir)
    assert state["deployments"]["prod"]["image"] == digest_ref("a")
    assert state["previous_deployments"]["prod"]["image"] == digest_ref("b")
    assert state["rollouts"]["prod"]["outcome"] == "succeeded" and state["stages"]["rollback"]["status"] == "passed"
    assert slack.posts[-1]["text"] == ":white_check_mark: prod rolled back to revision 3"
    fields = " ".join(f["text"] for block in slack.posts[-1]["blocks"] for f in block.get("fields", []))
    assert digest_ref("a") in fields and digest_ref("b") in fields
    # and back again: the rollback of a rollback is the newer digest
    rollback.run(settings, "prod")
    assert kube.running_images(PROD, "iris") == [digest_ref("b")] * 2


def test_rolled_back_update_is_announced_as_a_warning(kube, shipped, kube_settings, slack):
    settings = kube_settings(model=shipped.model, notify={"notifiers": ["slack"], "slack": {"webhook_url": slack.url}})
    to_prod(settings)
    kube.image_modes["sha256:" + "b" * 8] = "crash-loop"
    set_image(settings, digest_ref("b"))
    set_smoke_passed(settings)
    with pytest.raises(StageFailed):
        rolling_update.run(settings)
    assert slack.posts[-1]["text"] == ":warning: rolling-update of iris@1 to prod failed and was rolled back"
    assert "CrashLoopBackOff" in slack.posts[-1]["blocks"][1]["text"]["text"]


def test_rollback_with_no_earlier_revision_fails_cleanly(kube, shipped):
    to_prod(shipped)
    with pytest.raises(StageFailed, match="no previous revision to roll back to"):
        rollback.run(shipped, "prod")
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2


def test_status_reads_the_deployment_and_stop_scales_it_to_zero(kube, shipped):
    from mlops_cli.status import status, stop

    to_prod(shipped)
    shown = status(shipped)
    assert shown.running == {"test": True, "prod": True}
    assert any(line.startswith("prod") and "running" in line for line in shown.lines())
    assert "rollout    prod: succeeded (revision none -> 1)" in "\n".join(shown.lines())
    assert stop(shipped, "prod").stopped == ["prod"]
    assert kube.deployment(PROD, "iris")["spec"]["replicas"] == 0
    assert kube.running_images(PROD, "iris") == []
    assert kube.running_images(TEST, "iris") == [digest_ref("a")] * 2


def test_a_cluster_without_the_servicemonitor_crd_changes_no_deployment(shipped, kube_settings):
    from doubles.kube_api import KubeApiDouble

    plain = KubeApiDouble(crds=False)
    url = plain.start()
    try:
        settings = kube_settings(model=shipped.model, kubernetes={"server": url, "token": plain.token})
        with pytest.raises(StageFailed, match=r"does not serve ServiceMonitor.*service_monitor: false"):
            deploy_to_test_env.run(settings)
        assert not [p for m, p, _ in plain.requests if m == "POST" and p.endswith("/deployments")]
        quiet = kube_settings(
            model=shipped.model, kubernetes={"server": url, "token": plain.token, "service_monitor": False}
        )
        assert deploy_to_test_env.run(quiet).revision == 1
    finally:
        plain.stop()


def test_an_unreachable_slack_does_not_fail_a_good_rollout(kube, shipped, kube_settings, capsys):
    from helpers import free_port

    dead = f"http://127.0.0.1:{free_port()}/services/T/B/X"
    settings = kube_settings(
        model=shipped.model, notify={"notifiers": ["slack"], "retries": 0, "slack": {"webhook_url": dead}}
    )
    to_prod(settings)
    assert read_state(settings.workdir)["rollouts"]["prod"]["outcome"] == "succeeded"
    err = capsys.readouterr().err
    assert "warning: could not notify slack: slack webhook unreachable" in err
    assert dead not in err  # the webhook URL is a secret


def test_a_change_the_controller_never_took_up_is_put_back_not_undone_too_far(kube, shipped, kube_settings):
    to_prod(shipped)
    kube.stalled = True  # the Deployment controller is stuck: our new template never becomes a revision
    slow = kube_settings(model=shipped.model, kubernetes={"rollout_timeout_s": 0.3})
    set_image(slow, digest_ref("b"))
    set_smoke_passed(slow)
    with pytest.raises(StageFailed) as failed:
        rolling_update.run(slow)
    assert "waiting for the deployment spec update to be observed" in failed.value.message
    assert "rolled back" in failed.value.message
    dep = kube.deployment(PROD, "iris")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == digest_ref("a")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert kube.running_images(PROD, "iris") == [digest_ref("a")] * 2


def test_a_failing_rollout_of_the_same_template_rolls_nothing_back(kube, shipped):
    deploy_to_test_env.run(shipped)
    kube.image_modes["sha256:" + "a" * 8] = "crash-loop"  # the running pods start crashing
    with pytest.raises(
        StageFailed, match="CrashLoopBackOff.*the pod template did not change, so there is nothing to roll back"
    ):
        deploy_to_test_env.run(shipped)
    assert not [p for m, p, c in kube.requests if c == "application/json-patch+json" and "deployments" in p]


def test_rollback_of_a_deployment_deleted_behind_our_back_is_one_clear_error(kube, shipped):
    to_prod(shipped)
    del kube.objects[("apps", "deployments", PROD, "iris")]
    with pytest.raises(StageFailed, match='deployments.apps "iris" not found in namespace mlops-prod'):
        rollback.run(shipped, "prod")
    assert read_state(shipped.workdir)["rollouts"]["prod"]["outcome"] == "failed"


def test_a_rollback_that_fails_too_does_not_claim_the_previous_revision_serves(kube, shipped):
    to_prod(shipped)
    kube.image_modes["sha256:" + "b" * 8] = "crash-loop"
    kube.image_modes["sha256:" + "a" * 8] = "crash-loop"  # the previous image no longer starts either
    set_image(shipped, digest_ref("b"))
    set_smoke_passed(shipped)
    with pytest.raises(StageFailed) as failed:
        rolling_update.run(shipped)
    message = failed.value.message
    assert "so did the rollback" in message and "rolling back to revision 1 failed" in message
    assert "still serves" not in message
    rollout = read_state(shipped.workdir)["rollouts"]["prod"]
    assert rollout["outcome"] == "failed"


def test_a_user_who_may_not_list_pods_still_gets_a_good_rollout(kube, shipped):
    kube.forbidden.add(("list", "pods"))  # naming stuck pods is a courtesy; the outcome is the Deployment's
    result = deploy_to_test_env.run(shipped)
    assert result.revision == 1
    assert kube.running_images(TEST, "iris") == [digest_ref("a")] * 2
    kube.image_modes["sha256:" + "b" * 8] = "crash-loop"
    set_image(shipped, digest_ref("b"))
    with pytest.raises(StageFailed) as failed:  # a failing one still fails, by the progress deadline
        deploy_to_test_env.run(shipped)
    assert "exceeded its progress deadline" in failed.value.message and "rolled back" in failed.value.message
    assert "cannot name stuck pods: forbidden: not allowed to list pods" in failed.value.message


def test_an_api_server_lost_mid_rollout_is_recorded_and_announced(kube, shipped, kube_settings, slack):
    settings = kube_settings(
        model=shipped.model,
        notify={"notifiers": ["slack"], "slack": {"webhook_url": slack.url}},
        kubernetes={"api_retries": 1},
    )
    to_prod(settings)
    kube.image_modes["sha256:" + "c" * 8] = "never-ready"
    set_image(settings, digest_ref("c"))
    set_smoke_passed(settings)
    kube.down_after = 20  # the rollout starts, then the API server stops answering (503)
    with pytest.raises(TemporaryError, match="answered 503"):
        rolling_update.run(settings)
    rollout = read_state(settings.workdir)["rollouts"]["prod"]
    assert rollout["outcome"] == "failed" and "state is unknown" in rollout["message"]
    assert slack.posts[-1]["text"] == ":rotating_light: rolling-update of iris@1 to prod failed"


def test_deploying_the_same_image_again_says_unchanged_not_replaced(kube, shipped):
    first = deploy_to_test_env.run(shipped)
    again = deploy_to_test_env.run(shipped)
    assert (again.revision, again.previous_revision) == (first.revision, first.revision)  # what served before it
    assert again.lines() == [f"test: revision 1 ready at {again.url} (unchanged)"]
    set_image(shipped, digest_ref("b"))
    assert deploy_to_test_env.run(shipped).lines()[0].endswith("(replaced revision 1)")


def test_an_abort_just_as_the_deployment_is_written_puts_it_back(kube, shipped, monkeypatch):
    from mlops_cli.targets.kubeapi import Kube

    deploy_to_test_env.run(shipped)
    template = kube.deployment(TEST, "iris")["spec"]["template"]
    real_apply = Kube.apply

    def apply_then_abort(self, kind, namespace, name, body, force=False):
        answer = real_apply(self, kind, namespace, name, body, force)
        if kind == "Deployment":  # our write landed; Jenkins' SIGTERM arrives now
            raise KeyboardInterrupt
        return answer

    monkeypatch.setattr(Kube, "apply", apply_then_abort)
    set_image(shipped, digest_ref("b"))
    with pytest.raises(KeyboardInterrupt):
        deploy_to_test_env.run(shipped)
    assert kube.deployment(TEST, "iris")["spec"]["template"] == template  # the controller brings pods of it back


def test_an_abort_between_the_deployment_write_and_the_wait_puts_it_back(kube, shipped, monkeypatch):
    """The window after the write has answered and before the wait starts (issue 10)."""
    from mlops_cli.targets.kubernetes import KubernetesTarget

    deploy_to_test_env.run(shipped)
    template = kube.deployment(TEST, "iris")["spec"]["template"]
    real_apply = KubernetesTarget._apply

    class SignalOnRead(dict):  # the answer of the write; SIGTERM lands as the target first reads it
        def __getitem__(self, key):
            raise KeyboardInterrupt

    def apply_then_abort(self, manifest):
        answer = real_apply(self, manifest)
        return SignalOnRead(answer) if manifest["kind"] == "Deployment" else answer

    monkeypatch.setattr(KubernetesTarget, "_apply", apply_then_abort)
    set_image(shipped, digest_ref("b"))
    with pytest.raises(KeyboardInterrupt):
        deploy_to_test_env.run(shipped)
    monkeypatch.undo()
    assert kube.deployment(TEST, "iris")["spec"]["template"] == template
    # the journal's repair ran at once: recorded as a rollout, nothing left pending
    state = read_state(shipped.workdir)
    assert state["intents"] == {} and state["rollouts"]["test"]["outcome"] == "rolled-back"
    assert state["rollouts"]["test"]["message"].startswith(
        "aborted deploy-test of revision 2 (at step applying): undone"
    )
    assert state["deployments"]["test"]["image"] == digest_ref("a")
