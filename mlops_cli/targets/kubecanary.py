"""Canary releases on the kubernetes target: the new image beside the stable one, the traffic split by the router.

A canary release of the Deployment `<name>` adds, in its namespace:
- Deployment `<name>-canary`: the new image's rendered Deployment (the one a rolling update would apply),
  `kubernetes.canary_replicas` pods labelled `app.kubernetes.io/instance: <name>-canary` and
  `mlops.io/track: canary`. The stable Deployment's selector (`app.kubernetes.io/name` + `instance: <name>`)
  is immutable and its Service, HPA, PDB and NetworkPolicy select the same labels, so the canary's pods
  carry another `instance` and none of the stable objects ever selects them. The stable pods' template
  carries `mlops.io/track: stable` (a label the unchanged selector still matches);
- Service `<name>-canary` (its pods; labelled like the stable Service, so the ServiceMonitor scrapes it too,
  with `mlops.io/track` mapped to the Prometheus label `track`) and, with `kubernetes.network_policy`, a
  NetworkPolicy `<name>-canary` letting the same peers in;
- the split, by `kubernetes.traffic_router`: `route` - the Route's `to` (the stable Service, weight 100-w)
  and `alternateBackends` ([the canary Service, weight w]); `nginx` - a second Ingress `<name>-canary` with
  `nginx.ingress.kubernetes.io/canary: "true"` and `canary-weight: "w"`; `gateway` - the HTTPRoute's rule
  with two weighted backendRefs.
Everything is rendered from deploy/openshift's templates and validated strictly before it is applied.
Promotion applies to the stable Deployment exactly what the rolling update of that release would have
applied (kept, as rendered, in the canary Deployment's annotation `mlops.io/promote`), through the rolling
update path (wait, automatic rollback), then sends everything to the stable Service and removes the canary.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import MlopsError, StageFailed, UsageError
from ..render import TRACK, Rendered, render, render_template, split, validate
from ..state import DeploymentRecord, State
from ..ui import progress
from . import Canary, CanaryMember, Journal, Release, Rollout, pause_at
from .kubeapi import NotFound
from .rollout import RolloutFailed, revision, wait

if TYPE_CHECKING:
    from ..settings import KubernetesSettings, Settings
    from .kubeapi import Kube


class KubernetesTarget(Protocol):
    """What the mixin uses of the kubernetes target (mypy's self-type for a mixin: a protocol)."""

    settings: Settings
    k: KubernetesSettings

    @property
    def kube(self) -> Kube: ...
    def _apply(self, manifest: dict[str, Any]) -> dict[str, Any]: ...
    def _roll_out(self, rendered: Rendered, journal: Journal, url: str | None = None) -> Rollout: ...
    def _where(self, env: str, current: DeploymentRecord | None) -> tuple[str, str]: ...
    def _members(
        self, namespace: str, name: str, stable: dict[str, Any] | None, canary: dict[str, Any]
    ) -> tuple[CanaryMember, CanaryMember]: ...
    def _remove_canary(self, namespace: str, name: str) -> None: ...


INSTANCE = "app.kubernetes.io/instance"
CANARY_OF = "mlops.io/canary-of"  # on the canary Deployment: the stable Deployment's name
PROMOTE = "mlops.io/promote"  # on the canary Deployment: the stable Deployment to apply on promotion (JSON)
NGINX_CANARY = "nginx.ingress.kubernetes.io/canary"
NGINX_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"


def canary_name(name: str) -> str:
    return f"{name}-canary"


def _pods_of(selector: dict[str, str], obj: dict[str, Any]) -> None:
    """Point a rendered Deployment/Service/NetworkPolicy (and its spread constraints) at the pods of `selector`."""
    spec = obj["spec"]
    if obj["kind"] == "Deployment":
        spec["selector"] = {"matchLabels": dict(selector)}
        for constraint in spec["template"]["spec"].get("topologySpreadConstraints") or []:
            constraint["labelSelector"] = {"matchLabels": dict(selector)}
    elif obj["kind"] == "Service":
        spec["selector"] = dict(selector)
    elif obj["kind"] == "NetworkPolicy":
        spec["podSelector"] = {"matchLabels": dict(selector)}


def canary_objects(rendered: Rendered, replicas: int) -> list[dict[str, Any]]:
    """The canary's Deployment, Service and NetworkPolicy, derived from the release's rendered stable objects."""
    name, cname = rendered.name, canary_name(rendered.name)
    selector = {**rendered.values["selector"], INSTANCE: cname}
    out = []
    for kind in ("NetworkPolicy", "Service", "Deployment"):
        stable = rendered.get(kind)
        if stable is None:
            continue
        obj = copy.deepcopy(stable)
        obj["metadata"]["name"] = cname
        obj["metadata"]["labels"] = {**obj["metadata"]["labels"], TRACK: "canary"}
        _pods_of(selector, obj)
        if kind == "Deployment":
            obj["spec"]["replicas"] = replicas
            obj["spec"]["template"]["metadata"]["labels"] = {
                **obj["spec"]["template"]["metadata"]["labels"],
                INSTANCE: cname,
                TRACK: "canary",
            }
            obj["metadata"]["annotations"] = {
                **obj["metadata"].get("annotations", {}),
                CANARY_OF: name,
                PROMOTE: json.dumps(stable, sort_keys=True, separators=(",", ":")),
            }
        out.append(obj)
    return out


def router_objects(settings: Any, rendered: Rendered, weight: int) -> list[dict[str, Any]]:
    """The traffic router's object(s) with `weight` percent to the canary, rendered from the templates."""
    name, cname = rendered.name, canary_name(rendered.name)
    values = {**rendered.values, **split(settings, name, cname, weight)}
    router = settings.kubernetes.router
    if router == "route":
        return [render_template("route.yaml.j2", values)]
    if router == "gateway":
        return [render_template("httproute.yaml.j2", values)]
    # nginx: a second Ingress for the same host and path, to the canary's Service, with the canary annotations
    return [
        render_template("ingress.yaml.j2", {**values, "name": cname, "labels": {**values["labels"], TRACK: "canary"}})
    ]


def render_canary(
    settings: Any, state: State, env: str, image: str, weight: int = 0
) -> tuple[Rendered, list[dict[str, Any]]]:
    """The release's rendered stable objects and its canary objects with the split at `weight`, all validated."""
    rendered = render(settings, state, env, image=image)
    objects = canary_objects(rendered, settings.kubernetes.canary_replicas) + router_objects(settings, rendered, weight)
    validate(rendered.manifests + objects, settings.kubernetes.kubernetes_version)
    return rendered, objects


def stable_manifest(canary_dep: dict[str, Any]) -> dict[str, Any]:
    """The stable Deployment to apply on promotion, as the canary Deployment keeps it."""
    text = ((canary_dep.get("metadata") or {}).get("annotations") or {}).get(PROMOTE)
    if not text:
        raise StageFailed(
            f"Deployment {canary_dep['metadata']['name']} carries no {PROMOTE} annotation: it was not "
            "started by mlops' canary release",
            hint="abort it (`mlops canary abort`) and start again",
        )
    return json.loads(text)


# --- the split on live objects -------------------------------------------------------------------------


def set_split(target: KubernetesTarget, namespace: str, name: str, weight: int | None) -> None:
    """`weight` percent of new requests to `<name>-canary`; None: all to the stable Service, no canary backend."""
    try:
        _set_split(target, namespace, name, weight)
    except NotFound:
        if weight is not None:
            raise
        # no router object (or no canary Ingress): nothing sends the canary requests


def _set_split(target: KubernetesTarget, namespace: str, name: str, weight: int | None) -> None:
    kube, router, cname = target.kube, target.k.router, canary_name(name)
    if router == "route":
        if weight is None:
            body: dict[str, Any] = {"spec": {"to": {"weight": 100}, "alternateBackends": None}}
        else:
            body = {
                "spec": {
                    "to": {"weight": 100 - weight},
                    "alternateBackends": [{"kind": "Service", "name": cname, "weight": weight}],
                }
            }
        kube.patch("Route", namespace, name, body)
    elif router == "nginx":
        if weight is None:
            kube.delete("Ingress", namespace, cname)
        else:
            kube.patch("Ingress", namespace, cname, {"metadata": {"annotations": {NGINX_WEIGHT: str(weight)}}})
    else:
        route = kube.get("HTTPRoute", namespace, name)
        rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [])
        for rule in rules:
            stable = [ref for ref in rule.get("backendRefs") or [] if ref.get("name") != cname]
            for ref in stable:
                ref["weight"] = 100 if weight is None else 100 - weight
            canary = [] if weight is None else [{"name": cname, "port": 80, "weight": weight}]
            rule["backendRefs"] = stable + canary
        kube.patch("HTTPRoute", namespace, name, {"spec": {"rules": rules}})


def read_split(target: KubernetesTarget, namespace: str, name: str) -> int:
    """The canary's live share of requests (0 when the router sends it none)."""
    kube, router, cname = target.kube, target.k.router, canary_name(name)
    try:
        if router == "route":
            spec = kube.get("Route", namespace, name).get("spec") or {}
            alt = next((b for b in spec.get("alternateBackends") or [] if b.get("name") == cname), None)
            if alt is None:
                return 0
            total = (spec.get("to") or {}).get("weight", 100) + alt.get("weight", 100)
            return round(100 * alt.get("weight", 100) / total) if total else 0
        if router == "nginx":
            annotations = kube.get("Ingress", namespace, cname)["metadata"].get("annotations") or {}
            return int(annotations.get(NGINX_WEIGHT, "0")) if annotations.get(NGINX_CANARY) == "true" else 0
        refs = [
            ref
            for rule in (kube.get("HTTPRoute", namespace, name).get("spec") or {}).get("rules") or []
            for ref in rule.get("backendRefs") or []
        ]
        total = sum(ref.get("weight", 1) for ref in refs)
        ours = sum(ref.get("weight", 1) for ref in refs if ref.get("name") == cname)
        return round(100 * ours / total) if total else 0
    except NotFound:
        return 0


# --- the CanCanary protocol ----------------------------------------------------------------------------


def _namespace_name(canary: Canary) -> tuple[str, str]:
    """namespace, Deployment name of the stable member's handle (`namespace/name`)."""
    handle = canary.stable.handle or ""
    namespace, sep, name = handle.partition("/")
    if not sep or not namespace or not name:
        raise StageFailed(f"the canary's stable member names no namespace/deployment ({handle!r})")
    return namespace, name


class KubeCanary:
    """CanCanary for KubernetesTarget (mixed in): see the module's docstring."""

    def _members(
        self: KubernetesTarget, namespace: str, name: str, stable: dict[str, Any] | None, canary: dict[str, Any]
    ) -> tuple[CanaryMember, CanaryMember]:
        cname = canary_name(name)

        def member(track: str, service: str, dep: dict[str, Any] | None) -> CanaryMember:
            url = f"http://{service}.{namespace}.svc"
            # stable: series with track="stable", or without the label (pods from before it was rendered)
            matcher = 'track="canary"' if track == "canary" else 'track!="canary"'
            template = ((dep or {}).get("spec") or {}).get("template") or {}
            image = ((template.get("spec") or {}).get("containers") or [{}])[0].get("image")
            return CanaryMember(
                track=track,
                url=url,
                metrics_url=f"{url}/metrics",
                selector=f'{matcher},namespace="{namespace}",service="{service}"',
                revision=revision(dep) if dep else None,
                image=image,
                handle=f"{namespace}/{service}",
            )

        return member("stable", name, stable), member("canary", cname, canary)

    def canary_start(
        self: KubernetesTarget, env: str, release: Release, current: DeploymentRecord, journal: Journal
    ) -> Canary:
        if not release.image:
            raise StageFailed("the kubernetes target runs images only", hint="run `mlops build-image` first")
        rendered, objects = render_canary(self.settings, release.state or State(), env, release.image, 0)
        namespace, name, cname = rendered.namespace, rendered.name, canary_name(rendered.name)
        if current.handle and current.handle != f"{namespace}/{name}":
            raise StageFailed(
                f"state names {current.handle} as {env}'s deployment, the release renders {namespace}/{name}",
                hint="a canary runs beside the current deployment: roll out with `rollout.strategy: rolling` once",
            )
        try:
            stable = self.kube.get("Deployment", namespace, name)
        except NotFound:
            raise StageFailed(
                f"{namespace}/{name} does not exist: a canary needs a current revision beside it",
                hint="the first release goes out with rollout.strategy rolling",
            ) from None
        progress(
            f"starting canary {namespace}/{cname} ({release.image}) beside {namespace}/{name} "
            f"({self.k.router} split at 0 %)"
        )
        journal("canary-start", instance=f"{namespace}/{cname}", url=current.url, image=release.image, weight=0)
        try:
            applied = {}
            for obj in objects:  # NetworkPolicy, Service, Deployment, then the router at weight 0
                applied[(obj["kind"], obj["metadata"]["name"])] = self._apply(obj)
            monitor = rendered.get("ServiceMonitor")
            if monitor is not None:  # the release's ServiceMonitor: maps mlops.io/track to `track`
                self._apply(monitor)
            written = applied[("Deployment", cname)]["metadata"].get("generation") or 0
            pause_at("canary-waiting")
            canary = wait(
                self.kube, namespace, cname, written, timeout_s=self.k.rollout_timeout_s, poll_s=self.k.poll_interval_s
            )
        except (RolloutFailed, MlopsError) as exc:
            self._remove_canary(namespace, name)
            raise StageFailed(
                f"{namespace}/{cname}: the canary did not become ready ({exc.message}); removed it, "
                f"{namespace}/{name} serves as before"
            ) from exc
        except BaseException:  # interrupted: weight is 0, stable serves everything; take the canary away
            progress(f"interrupted: removing canary {namespace}/{cname}")
            self._remove_canary(namespace, name)
            raise
        stable_member, canary_member = self._members(namespace, name, stable, canary)
        return Canary(env=env, url=current.url, stable=stable_member, canary=canary_member, weight=0)

    def canary_set_weight(self: KubernetesTarget, canary: Canary, weight: int, journal: Journal) -> Canary:
        if not 0 <= weight <= 100:
            raise UsageError(f"canary weight {weight} is not a percentage (0..100)")
        namespace, name = _namespace_name(canary)
        journal("canary-weight", weight=weight)
        set_split(self, namespace, name, weight)
        progress(f"{namespace}/{canary_name(name)}: {weight} % of new requests (router {self.k.router})")
        return replace(canary, weight=weight)

    def canary_promote(self: KubernetesTarget, canary: Canary, journal: Journal) -> Rollout:
        """Roll the stable Deployment to the canary's release (rolling update, rollback on failure), then
        all traffic to it and the canary removed. The split keeps its weight while the stable rolls."""
        namespace, name = _namespace_name(canary)
        cname = canary_name(name)
        try:
            dep = self.kube.get("Deployment", namespace, cname)
        except NotFound:
            raise StageFailed(f"no canary {namespace}/{cname} to promote") from None
        manifest = stable_manifest(dep)
        image = manifest["spec"]["template"]["spec"]["containers"][0]["image"]
        validate([manifest], self.k.kubernetes_version)
        journal("canary-promote", image=image)
        progress(f"promoting canary {namespace}/{cname}: rolling {namespace}/{name} to {image}")
        rollout = self._roll_out(
            Rendered(env=canary.env, namespace=namespace, name=name, image=image, manifests=[manifest]),
            journal,
            url=canary.url or None,
        )
        journal("canary-remove", weight=0)
        self._remove_canary(namespace, name)
        return rollout

    def canary_abort(self: KubernetesTarget, canary: Canary, journal: Journal) -> Rollout | None:
        """The stable Deployment was never touched: the deployment record holds (None)."""
        namespace, name = _namespace_name(canary)
        journal("canary-abort", weight=0)
        progress(f"aborting canary {namespace}/{canary_name(name)}: all requests to {namespace}/{name}")
        self._remove_canary(namespace, name)
        return None

    def _remove_canary(self: KubernetesTarget, namespace: str, name: str) -> None:
        """Traffic first (weight 0, the canary backend gone), then the canary's objects."""
        set_split(self, namespace, name, None)
        cname = canary_name(name)
        for kind in ("Deployment", "Service", "NetworkPolicy"):
            self.kube.delete(kind, namespace, cname)

    def canary_observe(self: KubernetesTarget, env: str, current: DeploymentRecord | None) -> Canary | None:
        if current is None or not current.handle or "/" not in current.handle:
            return None  # nothing deployed in env yet: a canary starts beside a recorded deployment only
        namespace, name = self._where(env, current)
        try:
            canary = self.kube.get("Deployment", namespace, canary_name(name))
        except NotFound:
            return None
        try:
            stable: dict[str, Any] | None = self.kube.get("Deployment", namespace, name)
        except NotFound:
            stable = None
        stable_member, canary_member = self._members(namespace, name, stable, canary)
        return Canary(
            env=env,
            url=current.url,
            stable=stable_member,
            canary=canary_member,
            weight=read_split(self, namespace, name),
        )
