"""The rollout rules of `kubectl rollout status` and `kubectl rollout undo`, on the API's JSON."""

from mlops_cli.targets.rollout import previous_replicaset, rollout_status, stuck_pods


def deployment(generation=2, observed=2, replicas=2, updated=2, total=2, available=2, progressing=None):
    conditions = [
        {
            "type": "Progressing",
            "status": "False" if progressing else "True",
            "reason": progressing or "ReplicaSetUpdated",
        }
    ]
    return {
        "metadata": {
            "name": "iris",
            "generation": generation,
            "uid": "u1",
            "annotations": {"deployment.kubernetes.io/revision": "3"},
        },
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": conditions,
        },
    }


def test_each_rule_in_kubectls_order():
    assert rollout_status(deployment(observed=1), 2).message == "waiting for the deployment spec update to be observed"
    assert rollout_status(deployment(), 3).message == "waiting for the deployment spec update to be observed"
    failed = rollout_status(deployment(progressing="ProgressDeadlineExceeded", updated=1), 2)
    assert failed.failed and not failed.done and "exceeded its progress deadline" in failed.message
    assert rollout_status(deployment(updated=1, total=3), 2).message == "1 out of 2 new replicas have been updated"
    assert rollout_status(deployment(total=3), 2).message == "1 old replicas are pending termination"
    assert rollout_status(deployment(available=1), 2).message == "1 of 2 updated replicas are available"
    done = rollout_status(deployment(), 2)
    assert done.done and not done.failed


def rs(name, revision, uid="u1"):
    return {
        "metadata": {
            "name": name,
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [{"uid": uid, "controller": True}],
        }
    }


def test_undo_picks_the_highest_owned_revision_below_the_current():
    sets = [rs("a", 1), rs("b", 2), rs("c", 3), rs("d", 2, uid="someone-else"), rs("e", 5)]
    assert previous_replicaset(deployment(), sets)["metadata"]["name"] == "b"
    assert previous_replicaset(deployment(), [rs("c", 3)]) is None


def test_stuck_pods_are_named_with_reason_and_message_for_the_new_template_only():
    def pod(name, template, reason, message="", exit_code=None):
        status = {"name": "server", "state": {"waiting": {"reason": reason, "message": message}}}
        if exit_code is not None:
            status["lastState"] = {"terminated": {"exitCode": exit_code, "reason": "Error"}}
        return {
            "metadata": {"name": name, "labels": {"pod-template-hash": template}},
            "status": {"containerStatuses": [status]},
        }

    pods = [
        pod("new-1", "h2", "ImagePullBackOff", 'Back-off pulling image "x"'),
        pod("new-2", "h2", "CrashLoopBackOff", "back-off 10s\nmore", exit_code=137),
        pod("new-3", "h2", "ContainerCreating"),
        pod("old-1", "h1", "ErrImagePull", "old trouble"),
    ]
    assert stuck_pods(pods, "h2") == [
        'pod new-1: ImagePullBackOff: Back-off pulling image "x"',
        "pod new-2: CrashLoopBackOff (last exit code 137, Error): back-off 10s",
    ]
    assert len(stuck_pods(pods)) == 3
