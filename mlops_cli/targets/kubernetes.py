"""The kubernetes target: the image, by digest, as a Deployment on OpenShift or plain Kubernetes.

deploy: render and validate the environment's manifests (mlops_cli/render.py), apply them
(server-side apply as field manager `mlops`: fields dropped from a template leave the live
object; another manager's fields are a one-line conflict unless --force), wait as
`kubectl rollout status` does, and when the rollout fails or times out undo it as
`kubectl rollout undo` does, then wait for the previous revision to serve again. Before the
Deployment's write the step is journaled (the stage's intent journal); `inspect` and
`restore_image` let the next run finish or undo a rollout that a kill -9 interrupted
(mlops_cli/reconcile.py). The target never reads or writes state itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..errors import MlopsError, StageFailed
from ..render import Rendered, render, validate
from ..settings import Settings
from ..state import DeploymentRecord, State
from ..ui import progress
from . import Journal, Release, RollbackFailed, RolledBack, Rollout, no_journal, pause_at
from .kubeapi import ApplyConflict, Kube, NotFound
from .kubecanary import KubeCanary
from .rollout import RolloutFailed, owned_replicasets, restore, revision, rollout_status, undo, wait

# The Deployment last: when another object is refused (RBAC, a missing CRD) no new revision has started.
APPLY_ORDER = (
    "ServiceAccount",
    "NetworkPolicy",
    "Service",
    "Route",
    "Ingress",
    "HTTPRoute",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "ServiceMonitor",
    "Deployment",
)


@dataclass(frozen=True)
class DeploymentView:
    """What a Deployment really runs, for reconciliation and `mlops status`."""

    handle: str  # namespace/name
    exists: bool
    image: str | None = None  # the pod template's image
    model_sha256: str | None = None  # its mlops.io/model-sha256 annotation
    revision: int = 0
    complete: bool = False  # the template rolled out and is available (`kubectl rollout status`)
    status: str = ""
    revisions: tuple[tuple[int, str], ...] = ()  # (revision, image) of its ReplicaSets, newest first


def _image(template: dict[str, Any]) -> str | None:
    containers = (template.get("spec") or {}).get("containers") or [{}]
    return containers[0].get("image")


class KubernetesTarget(KubeCanary):
    needs_image = True
    journals = True  # deploy() journals its steps; inspect/restore_image reconcile after an interruption

    def __init__(self, settings: Settings):
        self.settings = settings
        self.k = settings.kubernetes
        self._kube: Kube | None = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube(self.k)
        return self._kube

    # --- applying ------------------------------------------------------------------------------

    def _apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as `kubernetes.field_manager`: what the template no longer sets goes from the object.

        A live Deployment keeps its replica count (the HPA's): it is applied at the live value, so the
        apply neither changes it nor, by dropping it, lets the server reset it to 1. A conflict with
        our own manager's updates (a rollback, `mlops stop` scaling to zero) takes the fields back;
        with another manager's it is an error naming it, unless `kubernetes.force_conflicts` (--force).
        """
        kind, namespace, name = manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        for attempt in range(self.k.api_retries + 1):
            body = copy.deepcopy(manifest)
            if kind == "Deployment":
                try:
                    live_replicas = (self.kube.get(kind, namespace, name).get("spec") or {}).get("replicas")
                except NotFound:
                    live_replicas = None
                if live_replicas:
                    body["spec"]["replicas"] = live_replicas
            try:
                try:
                    return self.kube.apply(kind, namespace, name, body, force=self.k.force_conflicts)
                except ApplyConflict as exc:
                    if set(exc.owners) != {self.k.field_manager}:
                        raise
                    progress(
                        f"{kind} {namespace}/{name}: taking back fields our own earlier update changed "
                        f"({exc.summary()})"
                    )
                    return self.kube.apply(kind, namespace, name, body, force=True)
            except ApplyConflict as exc:
                scaled = kind == "Deployment" and {f for fs in exc.owners.values() for f in fs} == {".spec.replicas"}
                if scaled and attempt < self.k.api_retries:  # the autoscaler scaled between our read and our apply
                    progress(
                        f"{kind} {namespace}/{name}: replicas changed while we applied ({exc.summary()}); "
                        "reading them again"
                    )
                    continue
                raise StageFailed(
                    f"{kind} {namespace}/{name}: another field manager owns fields this apply would "
                    f"change: {exc.summary()}",
                    hint="find out who else writes it; --force (kubernetes.force_conflicts) takes them over",
                ) from None
            except NotFound as exc:  # the namespace exists (else UsageError): the kind is not served
                raise StageFailed(
                    f"the cluster does not serve {kind} ({manifest['apiVersion']}): {exc}",
                    hint=self._missing_kind_hint(kind),
                ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _missing_kind_hint(kind: str) -> str:
        return {
            "Route": "not OpenShift? set kubernetes.flavour: kubernetes",
            "ServiceMonitor": "no Prometheus Operator? set kubernetes.service_monitor: false",
            "HTTPRoute": "no Gateway API in the cluster? choose another kubernetes.traffic_router",
        }.get(kind, "check the cluster's Kubernetes version")

    def _url(self, rendered: Rendered, applied: dict[str, dict[str, Any]]) -> str:
        route = applied.get("Route")
        if route is not None:
            host = (route.get("spec") or {}).get("host")
            if not host:
                ingress = ((route.get("status") or {}).get("ingress") or [{}])[0]
                host = ingress.get("host")
            if host:
                return f"https://{host}"
        ingress = applied.get("Ingress")
        if ingress is not None:
            rules = (ingress.get("spec") or {}).get("rules") or []
            host = next((r["host"] for r in rules if r.get("host")), None)
            if host:
                return f"{'https' if (ingress.get('spec') or {}).get('tls') else 'http'}://{host}"
        route = applied.get("HTTPRoute")
        hostnames = (route.get("spec") or {}).get("hostnames") if route is not None else None
        if hostnames:  # TLS, if any, ends at the Gateway's listener (kubernetes.gateway)
            return f"https://{hostnames[0]}"
        return f"http://{rendered.name}.{rendered.namespace}.svc"

    # --- the DeployTarget protocol -------------------------------------------------------------

    def deploy(
        self, env: str, release: Release, current: DeploymentRecord | None, journal: Journal = no_journal
    ) -> Rollout:
        if not release.image:
            raise StageFailed("the kubernetes target runs images only", hint="run `mlops build-image` first")
        rendered = render(self.settings, release.state or State(), env, image=release.image)
        validate(rendered.manifests, self.k.kubernetes_version)
        return self._roll_out(rendered, journal)

    def _roll_out(self, rendered: Rendered, journal: Journal, url: str | None = None) -> Rollout:
        """Apply the rendered objects (the Deployment last), wait, roll back when the new revision fails.

        `url`: the entry point when `rendered` holds no Route/Ingress/HTTPRoute (a canary's promotion)."""
        namespace, name = rendered.namespace, rendered.name
        try:
            before = self.kube.get("Deployment", namespace, name)
        except NotFound:
            before = None
        previous = revision(before) if before is not None else None
        progress(f"applying {len(rendered.manifests)} objects to namespace {namespace} on {self.kube.server}")
        applied: dict[str, dict[str, Any]] = {}
        touched = False  # the Deployment's write has started: it may have landed
        written: int | None = None
        # One guarded block from the Deployment's write to the end of the wait: an abort anywhere in
        # it (even between the write's answer and the wait) leaves the previous revision serving.
        try:
            for kind in APPLY_ORDER:
                manifest = rendered.get(kind)
                if manifest is None:
                    continue
                if kind == "Deployment":  # journaled first: a kill -9 from here on is finished or undone next run
                    journal(
                        "applying",
                        revision=(previous or 0) + 1,
                        instance=f"{namespace}/{name}",
                        url=url or self._url(rendered, applied),
                    )
                touched = touched or kind == "Deployment"
                applied[kind] = self._apply(manifest)
            written = applied["Deployment"]["metadata"].get("generation") or 0
            journal("waiting")
            pause_at("waiting")
            dep = wait(
                self.kube, namespace, name, written, timeout_s=self.k.rollout_timeout_s, poll_s=self.k.poll_interval_s
            )
        except (RolloutFailed, MlopsError) as exc:
            if written is None:  # a write failed: nothing to wait for or undo here
                raise
            if not previous or before is None:
                raise StageFailed(
                    f"{namespace}/{name}: the first rollout failed and there is no previous "
                    f"revision to go back to: {exc.message}"
                ) from exc
            if written <= (before["metadata"].get("generation") or 0):
                raise StageFailed(
                    f"{namespace}/{name}: {exc.message} (the pod template did not change, so there "
                    "is nothing to roll back)"
                ) from exc
            restored = self._roll_back(namespace, name, exc, before)
            raise RolledBack(
                f"{namespace}/{name}: the new revision failed ({exc.message}); rolled back to the "
                f"previous revision, which serves again as revision {restored.revision}",
                restored=restored,
                failed_revision=restored.previous_revision,
            ) from exc
        except BaseException:  # interrupted (Jenkins abort): leave the previous revision serving, not half of each
            if (
                touched
                and before is not None
                and previous
                and (written is None or written > (before["metadata"].get("generation") or 0))
            ):
                progress(f"interrupted: putting {namespace}/{name} back to the previous revision")
                self._undo(namespace, name, before)
            raise
        return Rollout(
            url=url or self._url(rendered, applied),
            revision=revision(dep),
            previous_revision=previous,
            handle=f"{namespace}/{name}",
            image=rendered.image,
        )

    def _undo(self, namespace: str, name: str, replaced: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        """`kubectl rollout undo`; if the controller never made our change a revision, put `replaced` back."""
        if replaced is not None and revision(self.kube.get("Deployment", namespace, name)) <= revision(replaced):
            return restore(self.kube, namespace, name, replaced)
        return undo(self.kube, namespace, name)

    def _roll_back(
        self, namespace: str, name: str, cause: Exception, replaced: dict[str, Any] | None = None
    ) -> Rollout:
        progress(f"rolling {namespace}/{name} back: {getattr(cause, 'message', cause)}")
        before = self.kube.get("Deployment", namespace, name)
        patched, to_revision = self._undo(namespace, name, replaced)
        try:
            dep = wait(
                self.kube,
                namespace,
                name,
                patched["metadata"].get("generation") or 0,
                timeout_s=self.k.rollout_timeout_s,
                poll_s=self.k.poll_interval_s,
            )
        except MlopsError as exc:
            raise RollbackFailed(
                f"{namespace}/{name}: rolling back to revision {to_revision} failed: {exc.message}",
                hint="look at the pods with `oc get pods` / `kubectl get pods`",
            ) from exc
        image = (dep["metadata"].get("annotations") or {}).get("mlops.io/image") or dep["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        return Rollout(
            url="",
            revision=revision(dep),
            previous_revision=revision(before),
            handle=f"{namespace}/{name}",
            image=image,
        )

    def rollback(self, env: str, current: DeploymentRecord) -> Rollout:
        """`mlops rollback`: back to the revision before the current one, then wait until it serves."""
        namespace, name = self._where(env, current)
        try:
            restored = self._roll_back(namespace, name, StageFailed("requested"))
        except RollbackFailed as exc:  # the revision that served before must serve again, not the broken one
            back = self._roll_back(namespace, name, exc)
            raise RolledBack(
                f"{exc.message}; the revision that served before serves again as revision {back.revision}",
                restored=back,
                failed_revision=back.previous_revision,
            ) from exc
        return Rollout(
            url=current.url,
            revision=restored.revision,
            previous_revision=restored.previous_revision,
            handle=restored.handle,
            image=restored.image,
        )

    # --- reconciliation (mlops_cli/reconcile.py) ---------------------------------------------------

    def inspect(self, handle: str) -> DeploymentView:
        """The Deployment `namespace/name`: its template's image and annotations, revision, rollout status, ReplicaSets."""
        namespace, name = handle.split("/", 1)
        try:
            dep = self.kube.get("Deployment", namespace, name)
        except NotFound:
            return DeploymentView(handle=handle, exists=False, status="the Deployment does not exist")
        template = (dep.get("spec") or {}).get("template") or {}
        selector = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        sets = owned_replicasets(dep, self.kube.list("ReplicaSet", namespace, selector))
        status = rollout_status(dep, 0)
        available = ((dep.get("status") or {}).get("availableReplicas") or 0) > 0
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        return DeploymentView(
            handle=handle,
            exists=True,
            image=_image(template),
            model_sha256=annotations.get("mlops.io/model-sha256")
            or ((dep["metadata"].get("annotations") or {}).get("mlops.io/model-sha256")),
            revision=revision(dep),
            complete=status.done and available,
            status=status.message,
            revisions=tuple(
                sorted(((revision(rs), _image(rs["spec"]["template"]) or "?") for rs in sets), reverse=True)
            ),
        )

    def await_rollout(self, handle: str) -> DeploymentView:
        """Wait (up to kubernetes.rollout_timeout_s) for the template's rollout, as the interrupted run would have."""
        namespace, name = handle.split("/", 1)
        progress(f"waiting for the interrupted rollout of {handle} to finish")
        try:
            wait(self.kube, namespace, name, 0, timeout_s=self.k.rollout_timeout_s, poll_s=self.k.poll_interval_s)
        except RolloutFailed as exc:
            progress(f"{handle}: {exc.message}")
        return self.inspect(handle)

    def restore_image(self, handle: str, image: str) -> Rollout:
        """`kubectl rollout undo --to-revision` of the newest revision that ran `image`; wait until it serves."""
        namespace, name = handle.split("/", 1)
        view = self.inspect(handle)
        to = next((rev for rev, img in view.revisions if img == image and rev), None)
        if to is None:
            raise RollbackFailed(
                f"{handle}: no ReplicaSet of it runs {image} any more, so it cannot go back to it",
                hint="deploy that image again",
            )
        progress(f"putting {handle} back to revision {to} ({image})")
        patched, _ = undo(self.kube, namespace, name, to_revision=to)
        try:
            dep = wait(
                self.kube,
                namespace,
                name,
                patched["metadata"].get("generation") or 0,
                timeout_s=self.k.rollout_timeout_s,
                poll_s=self.k.poll_interval_s,
            )
        except MlopsError as exc:
            raise RollbackFailed(
                f"{handle}: going back to revision {to} failed: {exc.message}",
                hint="look at the pods with `oc get pods` / `kubectl get pods`",
            ) from exc
        return Rollout(url="", revision=revision(dep), previous_revision=view.revision, handle=handle, image=image)

    def _where(self, env: str, current: DeploymentRecord | None) -> tuple[str, str]:
        if current is not None and current.handle and "/" in current.handle:
            namespace, name = current.handle.split("/", 1)
            return namespace, name
        raise StageFailed(
            f"state names no Kubernetes deployment for {env}", hint="run deploy-test / rolling-update first"
        )

    def is_running(self, current: DeploymentRecord) -> bool:
        namespace, name = self._where(current.env, current)
        try:
            dep = self.kube.get("Deployment", namespace, name)
        except (NotFound, MlopsError):
            return False
        return ((dep.get("status") or {}).get("availableReplicas") or 0) > 0

    def stop(self, current: DeploymentRecord) -> bool:
        """Scale the Deployment to zero (the HPA leaves a Deployment at zero alone); False if it ran none."""
        namespace, name = self._where(current.env, current)
        try:
            dep = self.kube.get("Deployment", namespace, name)
        except NotFound:
            return False
        if not (dep.get("spec") or {}).get("replicas"):
            return False
        self.kube.patch("Deployment", namespace, name, {"spec": {"replicas": 0}})
        return True
