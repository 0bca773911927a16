"""Waiting for a Deployment exactly as `kubectl rollout status` does, and undoing as `kubectl rollout undo`.

Pure functions over the API's JSON (`rollout_status`, `stuck_pods`, `previous_replicaset`) and
two loops over a Kube connection (`wait`, `undo`). The rules are kubectl's
(staging/src/k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go and rollback.go).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from ..errors import MlopsError, StageFailed
from ..ui import progress

REVISION = "deployment.kubernetes.io/revision"
STUCK_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
# Annotations kubectl does not copy back from a ReplicaSet on undo (deployment/util annotationsToSkip).
SKIP_ON_UNDO = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
}

OBSERVING = "waiting for the deployment spec update to be observed"


class RolloutFailed(StageFailed):
    """The rollout stopped making progress or did not finish in time."""


@dataclass(frozen=True)
class Status:
    done: bool
    message: str
    failed: bool = False


def revision(obj: dict[str, Any]) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def rollout_status(dep: dict[str, Any], written_generation: int) -> Status:
    """kubectl's DeploymentStatusViewer, with observedGeneration >= the generation our write returned."""
    name = dep["metadata"]["name"]
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    generation = max(written_generation, dep["metadata"].get("generation") or 0)
    if (status.get("observedGeneration") or 0) < generation:
        return Status(False, OBSERVING)
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None)
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Status(False, f"deployment {name!r} exceeded its progress deadline", failed=True)
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < replicas:
        return Status(False, f"{updated} out of {replicas} new replicas have been updated")
    if total > updated:
        return Status(False, f"{total - updated} old replicas are pending termination")
    if available < updated:
        return Status(False, f"{available} of {updated} updated replicas are available")
    return Status(True, f"deployment {name!r} successfully rolled out")


def owned_replicasets(dep: dict[str, Any], replicasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    uid = dep["metadata"].get("uid")
    return [
        rs
        for rs in replicasets
        if any(ref.get("controller") and ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or [])
    ]


def new_replicaset(dep: dict[str, Any], replicasets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet of the Deployment's current revision."""
    current = revision(dep)
    return next((rs for rs in owned_replicasets(dep, replicasets) if revision(rs) == current and current), None)


def previous_replicaset(dep: dict[str, Any], replicasets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """kubectl rollout undo (to revision 0): the owned ReplicaSet with the highest revision below the current."""
    current = revision(dep)
    older = [rs for rs in owned_replicasets(dep, replicasets) if 0 < revision(rs) < current]
    return max(older, key=revision, default=None)


def stuck_pods(pods: list[dict[str, Any]], template_hash: str | None = None) -> list[str]:
    """`pod NAME: REASON: MESSAGE` for pods whose containers wait in a state that will not cure itself."""
    found = []
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if template_hash is not None and labels.get("pod-template-hash") != template_hash:
            continue
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                message = (waiting.get("message") or "").strip().splitlines()
                last = (cs.get("lastState") or {}).get("terminated") or {}
                exit_info = (
                    f" (last exit code {last['exitCode']}, {last.get('reason', '')})" if "exitCode" in last else ""
                )
                found.append(
                    f"pod {pod['metadata']['name']}: {waiting['reason']}{exit_info}"
                    + (f": {message[0]}" if message else "")
                )
                break
    return found


def _stuck(kube: Any, dep: dict[str, Any]) -> list[str]:
    """Stuck pods of the new ReplicaSet, best effort: the rollout's outcome is read from the Deployment alone

    (as kubectl does), so a user who may not list pods or ReplicaSets (RBAC) or an API blip here
    must not fail, and so roll back, a rollout that is going well.
    """
    try:
        return _stuck_pods_of(kube, dep)
    except MlopsError as exc:
        return [f"(cannot name stuck pods: {exc.message})"]


def _stuck_pods_of(kube: Any, dep: dict[str, Any]) -> list[str]:
    namespace = dep["metadata"]["namespace"]
    selector = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    new = new_replicaset(dep, kube.list("ReplicaSet", namespace, selector))
    template_hash = ((new or {}).get("metadata", {}).get("labels") or {}).get("pod-template-hash")
    return stuck_pods(kube.list("Pod", namespace, selector), template_hash)


def wait(
    kube: Any, namespace: str, name: str, written_generation: int, *, timeout_s: float, poll_s: float
) -> dict[str, Any]:
    """Poll until the rollout is complete; RolloutFailed on ProgressDeadlineExceeded or timeout."""
    deadline = time.monotonic() + timeout_s
    shown: tuple[str, ...] = ()
    while True:
        dep = kube.get("Deployment", namespace, name)
        status = rollout_status(dep, written_generation)
        if status.done:
            progress(status.message)
            return dep
        observed = status.message != OBSERVING
        stuck = _stuck(kube, dep) if observed else []  # the new ReplicaSet is known once the spec is observed
        if (status.message, *stuck) != shown:
            shown = (status.message, *stuck)
            progress(f"{namespace}/{name}: {status.message}" + "".join(f"\n      {s}" for s in stuck))
        if status.failed:
            raise RolloutFailed(status.message + (": " + "; ".join(stuck) if stuck else ""))
        if time.monotonic() >= deadline:
            raise RolloutFailed(
                f"deployment {name!r} did not finish rolling out within {timeout_s:g} s "
                f"(kubernetes.rollout_timeout_s): {status.message}" + ("; " + "; ".join(stuck) if stuck else "")
            )
        time.sleep(poll_s)


def undo(kube: Any, namespace: str, name: str, to_revision: int = 0) -> tuple[dict[str, Any], int]:
    """`kubectl rollout undo [--to-revision=N]`: that revision's pod template and annotations, as a JSON patch.

    Revision 0 is the one before the current. Returns the patched Deployment and the revision it rolls back to.
    """
    dep = kube.get("Deployment", namespace, name)
    selector = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    replicasets = kube.list("ReplicaSet", namespace, selector)
    if to_revision:
        previous = next((rs for rs in owned_replicasets(dep, replicasets) if revision(rs) == to_revision), None)
    else:
        previous = previous_replicaset(dep, replicasets)
    if previous is None:
        raise StageFailed(
            f"deployment {name!r} has no "
            + (f"revision {to_revision}" if to_revision else "previous revision")
            + f" to roll back to (current revision {revision(dep) or 'none'})"
        )
    template = copy.deepcopy(previous["spec"]["template"])
    (template.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    annotations = {k: v for k, v in (dep["metadata"].get("annotations") or {}).items() if k in SKIP_ON_UNDO}
    annotations.update(
        {k: v for k, v in (previous["metadata"].get("annotations") or {}).items() if k not in SKIP_ON_UNDO}
    )
    patch = [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]
    return kube.patch("Deployment", namespace, name, patch), revision(previous)


def restore(kube: Any, namespace: str, name: str, before: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Put back the pod template and annotations we replaced, when the controller never took up our change

    (no new revision yet, so `undo` would go one revision too far back).
    """
    patch = [
        {"op": "replace", "path": "/spec/template", "value": before["spec"]["template"]},
        {"op": "replace", "path": "/metadata/annotations", "value": before["metadata"].get("annotations") or {}},
    ]
    return kube.patch("Deployment", namespace, name, patch), revision(before)
