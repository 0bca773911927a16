"""A test double of the Kubernetes API server: the parts of apps/v1, core/v1 (and the few other
groups mlops applies) that the official Python client uses, with a simulated Deployment controller.

No real API server can run on this machine (none on PyPI, Debian or npm), so this serves the
documented REST paths and JSON shapes on 127.0.0.1: objects with uid, resourceVersion and
generation; metav1.Status bodies for 401/403/404/409/415/422; strategic merge, JSON merge and
JSON patches by Content-Type (strategic merge refused for CRDs, as the real server does);
server-side apply (application/apply-patch+yaml) with managedFields per field manager, conflicts
and removal of fields no longer applied (kube_apply.py); resourceVersion preconditions (409 Conflict). `kmock` (PyPI) mocks requests one by one and
simulates no controller, which is the point here, so this is our own.

The controller runs on a virtual clock that advances `tick` seconds per request, so tests
never depend on wall time: each request first reconciles every Deployment as the real
controller would (a new ReplicaSet per pod template, revision annotations, maxSurge/
maxUnavailable scaling, pods becoming available after `ready_after`, progress deadline),
then answers. How a pod of an image behaves is set per image substring in `image_modes`:
"ok", "pull-error" (ErrImagePull then ImagePullBackOff), "crash-loop" (CrashLoopBackOff),
"never-ready" (running, readiness never passes).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from . import kube_apply
from .kube_apply import ServerSideApply
from .kube_patch import ApiError, json_patch, merge_patch, strategic_merge

APPLY = "application/apply-patch+yaml"

REVISION = "deployment.kubernetes.io/revision"
SKIP_TO_RS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
}
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces/(?P<name>[^/]+)$")
# (group, version, plural) -> kind; custom resources (CRDs) take no strategic merge patch
BUILTIN = {
    ("", "v1", "services"): "Service",
    ("", "v1", "pods"): "Pod",
    ("apps", "v1", "deployments"): "Deployment",
    ("apps", "v1", "replicasets"): "ReplicaSet",
    ("networking.k8s.io", "v1", "ingresses"): "Ingress",
    ("autoscaling", "v2", "horizontalpodautoscalers"): "HorizontalPodAutoscaler",
    ("policy", "v1", "poddisruptionbudgets"): "PodDisruptionBudget",
    ("", "v1", "serviceaccounts"): "ServiceAccount",
    ("networking.k8s.io", "v1", "networkpolicies"): "NetworkPolicy",
}
OPENSHIFT = {("route.openshift.io", "v1", "routes"): "Route"}  # aggregated API: takes strategic merge
CRDS = {("monitoring.coreos.com", "v1", "servicemonitors"): "ServiceMonitor"}
GATEWAY = {("gateway.networking.k8s.io", "v1", "httproutes"): "HTTPRoute"}  # Gateway API CRDs: plain CRUD
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class KubeApiDouble(ServerSideApply):
    """The double's state and controller; `start()` serves it on 127.0.0.1 and returns its URL."""

    def __init__(
        self,
        *,
        namespaces: tuple[str, ...] = ("mlops-test", "mlops-prod"),
        token: str = "double-token",
        openshift: bool = True,
        crds: bool = True,
        gateway_api: bool = True,
        tick: float = 1.0,
        ready_after: float = 2.0,
        router_domain: str = "apps.cluster.test",
        user: str = "system:serviceaccount:ci:jenkins",
    ):
        self.namespaces = set(namespaces)
        self.token = token
        self.kinds = {
            **BUILTIN,
            **(OPENSHIFT if openshift else {}),
            **(CRDS if crds else {}),
            **(GATEWAY if gateway_api else {}),
        }
        self.tick, self.ready_after = tick, ready_after
        self.router_domain, self.user = router_domain, user
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (group, plural, ns, name) -> object
        self.image_modes: dict[str, str] = {}
        self.forbidden: set[tuple[str, str]] = set()  # (verb, plural) answered 403
        self.stalled = False  # the controller does nothing until a Deployment's next JSON patch
        self.conflicts: dict[str, int] = {}  # plural -> writes to come that meet a concurrent writer (409)
        self.requests: list[tuple[str, str, str]] = []  # (method, path, content type)
        self.queries: list[tuple[str, str, dict[str, list[str]]]] = []  # (method, path, query parameters)
        self.user_agent = ""
        self.down_after: int | None = None  # after this many more requests, answer 503 (the API goes away)
        self.clock = 0.0
        self.lock = threading.RLock()
        self._rv = itertools.count(1000)
        self._pod_ids = itertools.count(1)
        self._progress: dict[str, tuple[Any, float]] = {}  # deployment uid -> (last progress marker, at)
        self._born: dict[str, float] = {}  # pod uid -> virtual time of creation
        self.server: ThreadingHTTPServer | None = None

    # --- serving --------------------------------------------------------------------------------

    def start(self) -> str:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, body = double.handle(
                    self.command,
                    self.path,
                    self.headers.get("Content-Type", ""),
                    self.headers.get("Authorization", ""),
                    raw,
                    self.headers.get("User-Agent", ""),
                )
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def handle(
        self, method: str, raw_path: str, content_type: str, auth: str, raw: bytes, user_agent: str = ""
    ) -> tuple[int, Any]:
        with self.lock:
            url = urlparse(raw_path)
            self.requests.append((method, url.path, content_type.split(";")[0]))
            self.queries.append((method, url.path, parse_qs(url.query)))
            self.user_agent = user_agent
            self.clock += self.tick
            try:
                if self.down_after is not None:
                    if self.down_after <= 0:
                        raise ApiError(
                            503, "ServiceUnavailable", "the server is currently unable to handle the request"
                        )
                    self.down_after -= 1
                if auth != f"Bearer {self.token}":
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                self.reconcile()
                return self.route(method, url.path, parse_qs(url.query), content_type.split(";")[0].strip(), raw)
            except ApiError as exc:
                return exc.code, exc.body

    # --- REST ------------------------------------------------------------------------------------

    def route(
        self, method: str, path: str, query: dict[str, list[str]], content_type: str, raw: bytes
    ) -> tuple[int, Any]:
        ns_match = NAMESPACE_PATH.match(path)
        if ns_match and method == "GET":
            name = ns_match["name"]
            if name not in self.namespaces:
                raise ApiError(404, "NotFound", f'namespaces "{name}" not found', {"name": name, "kind": "namespaces"})
            return 200, {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name},
                "status": {"phase": "Active"},
            }
        m = PATH.match(path)
        group = "" if m and m["core"] else (m["group"] if m else "")
        version = (m["core"] or m["version"]) if m else ""
        kind = self.kinds.get((group, version, m["plural"])) if m else None
        if m is None or kind is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        ns, plural, name = m["ns"], m["plural"], m["name"]
        resource = f"{plural}.{group}" if group else plural
        verb = {
            "GET": "get" if name else "list",
            "POST": "create",
            "PATCH": "patch",
            "PUT": "update",
            "DELETE": "delete",
        }[method]
        if (verb, plural) in self.forbidden:
            scope = f'in API group "{group}" in the namespace "{ns}"'
            who = f'{resource} "{name}"' if name else resource
            raise ApiError(
                403,
                "Forbidden",
                f'{who} is forbidden: User "{self.user}" cannot {verb} resource "{plural}" {scope}',
                {"name": name or "", "group": group, "kind": plural},
            )
        api_version = f"{group}/{version}" if group else version
        if verb == "list":
            selector = dict(p.split("=", 1) for p in (query.get("labelSelector", [""])[0]).split(",") if "=" in p)
            items = [
                copy.deepcopy(o)
                for (g, p, n, _), o in sorted(self.objects.items())
                if g == group
                and p == plural
                and n == ns
                and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            ]
            for item in items:
                item.pop("apiVersion", None), item.pop("kind", None)
            return 200, {
                "apiVersion": api_version,
                "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(next(self._rv))},
                "items": items,
            }
        key = (group, plural, ns, name or "")
        not_found = ApiError(
            404, "NotFound", f'{resource} "{name}" not found', {"name": name, "group": group, "kind": plural}
        )
        if verb == "get":
            if key not in self.objects:
                raise not_found
            return 200, self.objects[key]
        if verb == "delete":
            if key not in self.objects:
                raise not_found
            return 200, self.delete(key, query.get("propagationPolicy", ["Background"])[0])
        try:  # an apply body is YAML (JSON is YAML); every other body JSON
            body = yaml.safe_load(raw or b"null") if content_type == APPLY else json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError):
            raise ApiError(400, "BadRequest", "the body of the request was not valid JSON") from None
        manager = self._manager(query, verb, content_type)
        if verb == "patch" and content_type == APPLY:
            if ns not in self.namespaces:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
            return self.apply(key, api_version, kind, resource, body, manager, query.get("force", [""])[0] == "true")
        if verb == "create":
            if ns not in self.namespaces:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
            name = (body.get("metadata") or {}).get("name")
            key = (group, plural, ns, name)
            if key in self.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{resource} "{name}" already exists',
                    {"name": name, "group": group, "kind": plural},
                )
            created = self.create(key, api_version, kind, body)
            kube_apply.update(None, created, manager, api_version, self._crd(key), self.now())
            return 201, created
        if verb == "patch":
            if key not in self.objects:
                raise not_found
            before = copy.deepcopy(self.objects[key])
            patched = self.patch(key, kind, resource, content_type, body)
            kube_apply.update(before, patched, manager, api_version, self._crd(key), self.now())
            return 200, patched
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported by this double")

    def _crd(self, key: tuple[str, str, str, str]) -> bool:
        return (key[0], "v1", key[1]) in CRDS or (key[0], "v1", key[1]) in GATEWAY

    def delete(self, key: tuple[str, str, str, str], propagation: str) -> dict[str, Any]:
        """DELETE: the object goes at once (no finalizers here); with Background or Foreground propagation
        the garbage collector removes its dependents (ReplicaSets, their pods) too, here at once; Orphan
        leaves them. The answer is the deleted object for Services, Pods and custom resources (their
        storage returns it; the client's delete_namespaced_service reads a V1Service), else a Status."""
        obj = self.objects.pop(key)
        if propagation != "Orphan":
            for dependent in [
                k
                for k, o in self.objects.items()
                if k[2] == key[2]
                and any(r.get("uid") == obj["metadata"]["uid"] for r in o["metadata"].get("ownerReferences", []))
            ]:
                if dependent in self.objects:
                    self.delete(dependent, propagation)
        if self._crd(key) or key[1] in ("services", "pods"):
            return obj
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": key[3], "group": key[0], "kind": key[1], "uid": obj["metadata"]["uid"]},
        }

    def _stamp(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def create(
        self, key: tuple[str, str, str, str], api_version: str, kind: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = api_version, kind
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=key[2], uid=str(uuid.uuid4()), generation=1, creationTimestamp=self.now())
        meta.pop("resourceVersion", None)
        self._stamp(obj)
        if kind == "Deployment":
            obj["spec"].setdefault("replicas", 1)
            obj["status"] = {}
        elif kind == "Service":
            obj["spec"].setdefault("clusterIP", "198.51.100.10")  # documentation range: never addressed
            obj["spec"]["clusterIPs"] = [obj["spec"]["clusterIP"]]
        elif kind == "Route":
            host = obj["spec"].setdefault("host", f"{key[3]}-{key[2]}.{self.router_domain}")
            obj["status"] = {
                "ingress": [
                    {
                        "host": host,
                        "routerName": "default",
                        "conditions": [{"type": "Admitted", "status": "True", "lastTransitionTime": self.now()}],
                    }
                ]
            }
        self.objects[key] = obj
        return obj

    def patch(
        self, key: tuple[str, str, str, str], kind: str, resource: str, content_type: str, body: Any
    ) -> dict[str, Any]:
        live = self.objects[key]
        name = key[3]
        if self.conflicts.get(key[1], 0) > 0:  # another writer got there first
            self.conflicts[key[1]] -= 1
            self._stamp(live)
        if content_type == "application/strategic-merge-patch+json":
            if (key[0], "v1", key[1]) in CRDS:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - "
                    "accepted media types include: application/json-patch+json, "
                    "application/merge-patch+json, application/apply-patch+yaml",
                )
            if not isinstance(body, dict):
                raise ApiError(
                    400, "BadRequest", "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            new = strategic_merge(live, body)
        elif content_type == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise ApiError(
                    400, "BadRequest", "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            new = merge_patch(live, body)
        elif content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            new = json_patch(live, body)
            self.stalled = self.stalled and key[1] != "deployments"
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format - {content_type}"
            )
        # the patched object's resourceVersion, if the patch set one, is a precondition (any patch type)
        if (new.get("metadata") or {}).get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                {"name": name, "group": key[0], "kind": key[1]},
            )
        for fixed in ("uid", "namespace", "name", "creationTimestamp", "generation"):
            new["metadata"][fixed] = live["metadata"].get(fixed)
        if kind == "Deployment" and new["spec"].get("selector") != live["spec"].get("selector"):
            raise ApiError(
                422, "Invalid", f'Deployment.apps "{name}" is invalid: spec.selector: Invalid value: field is immutable'
            )
        if new.get("spec") != live.get("spec"):
            new["metadata"]["generation"] = live["metadata"]["generation"] + 1
        new["status"] = live.get("status", {}) if "status" in live else new.get("status")
        if new.get("status") is None:
            new.pop("status", None)
        self._stamp(new)
        self.objects[key] = new
        return new

    # --- the Deployment controller ---------------------------------------------------------------

    def now(self, at: float | None = None) -> str:
        return (EPOCH + timedelta(seconds=self.clock if at is None else at)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def mode(self, image: str) -> str:
        return next((m for part, m in self.image_modes.items() if part in image), "ok")

    def owned(self, ns: str, plural: str, uid: str) -> list[dict[str, Any]]:
        return [
            o
            for (g, p, n, _), o in self.objects.items()
            if p == plural and n == ns and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))
        ]

    def reconcile(self) -> None:
        if self.stalled:
            return
        for (_group, plural, ns, _name), dep in list(self.objects.items()):
            if plural == "deployments":
                self._reconcile_deployment(ns, dep)

    def _reconcile_deployment(self, ns: str, dep: dict[str, Any]) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        template = spec["template"]
        thash = template_hash(template)
        rss = self.owned(ns, "replicasets", meta["uid"])
        top = max((int(r["metadata"]["annotations"].get(REVISION, 0)) for r in rss), default=0)
        new = next((r for r in rss if r["metadata"]["labels"].get("pod-template-hash") == thash), None)
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in SKIP_TO_RS}
        if new is None:
            new = self._new_replicaset(ns, dep, thash, top + 1, annotations)
            rss.append(new)
        elif int(new["metadata"]["annotations"].get(REVISION, 0)) < top:  # a rollback: the old template again
            new["metadata"]["annotations"] = {**annotations, REVISION: str(top + 1)}
        if meta.setdefault("annotations", {}).get(REVISION) != new["metadata"]["annotations"][REVISION]:
            meta["annotations"][REVISION] = new["metadata"]["annotations"][REVISION]
            self._stamp(dep)
        olds = [r for r in rss if r is not new]
        desired = spec.get("replicas", 1)
        strategy = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        surge, max_unavailable = int(strategy.get("maxSurge", 1)), int(strategy.get("maxUnavailable", 0))
        pods = {r["metadata"]["name"]: self._pods(ns, r) for r in rss}
        available = {n: sum(1 for p in ps if self._pod_ready(p)) for n, ps in pods.items()}
        total = sum(r["spec"]["replicas"] for r in rss)
        # scale up the new ReplicaSet within maxSurge
        if new["spec"]["replicas"] < desired:
            room = desired + surge - total
            new["spec"]["replicas"] += max(0, min(room, desired - new["spec"]["replicas"]))
        elif new["spec"]["replicas"] > desired:
            new["spec"]["replicas"] = desired
        # scale old ReplicaSets down: unavailable pods first, available ones within maxUnavailable
        all_available = sum(available.values())
        can_remove = max(0, all_available - (desired - max_unavailable))
        for old in olds:
            unavailable = old["spec"]["replicas"] - available[old["metadata"]["name"]]
            drop = min(old["spec"]["replicas"], max(0, unavailable) + can_remove)
            can_remove -= max(0, drop - max(0, unavailable))
            old["spec"]["replicas"] -= drop
        for rs in rss:
            self._sync_pods(ns, rs)
        pods = {r["metadata"]["name"]: self._pods(ns, r) for r in rss}
        ready = sum(1 for ps in pods.values() for p in ps if self._pod_ready(p))
        new_ready = sum(1 for p in pods[new["metadata"]["name"]] if self._pod_ready(p))
        total_pods = sum(len(ps) for ps in pods.values())
        updated = len(pods[new["metadata"]["name"]])
        for rs in rss:
            rs_pods = pods[rs["metadata"]["name"]]
            rs["status"] = {
                "replicas": len(rs_pods),
                "observedGeneration": rs["metadata"]["generation"],
                "readyReplicas": sum(1 for p in rs_pods if self._pod_ready(p)),
                "availableReplicas": sum(1 for p in rs_pods if self._pod_ready(p)),
                "fullyLabeledReplicas": len(rs_pods),
            }
        complete = updated == desired and total_pods == updated and new_ready == desired
        marker, since = self._progress.get(meta["uid"], (None, self.clock))
        now_marker = (new["metadata"]["annotations"][REVISION], updated, new_ready, total_pods)
        if marker != now_marker:  # any progress restarts the progress deadline
            self._progress[meta["uid"]] = (now_marker, self.clock)
            since = self.clock
        deadline = spec.get("progressDeadlineSeconds", 600)
        rs_name = new["metadata"]["name"]
        if complete:
            progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif self.clock - since > deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        available_ok = ready >= desired - max_unavailable
        status = {
            "observedGeneration": meta["generation"],
            "replicas": total_pods,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, total_pods - ready),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available_ok else "False",
                    "reason": "MinimumReplicasAvailable" if available_ok else "MinimumReplicasUnavailable",
                    "message": "Deployment has minimum availability."
                    if available_ok
                    else "Deployment does not have minimum availability.",
                    "lastUpdateTime": self.now(),
                    "lastTransitionTime": self.now(),
                },
                {
                    "type": "Progressing",
                    "status": progressing[0],
                    "reason": progressing[1],
                    "message": progressing[2],
                    "lastUpdateTime": self.now(since),
                    "lastTransitionTime": self.now(since),
                },
            ],
        }
        if {k: v for k, v in status.items() if k != "conditions"} != {
            k: v for k, v in (dep.get("status") or {}).items() if k != "conditions"
        } or [c["reason"] for c in status["conditions"]] != [
            c["reason"] for c in (dep.get("status") or {}).get("conditions", [])
        ]:
            dep["status"] = status
            self._stamp(dep)

    def _new_replicaset(
        self, ns: str, dep: dict[str, Any], thash: str, revision: int, annotations: dict[str, str]
    ) -> dict[str, Any]:
        template = copy.deepcopy(dep["spec"]["template"])
        labels = {**template["metadata"].get("labels", {}), "pod-template-hash": thash}
        template["metadata"]["labels"] = labels
        name = f"{dep['metadata']['name']}-{thash}"
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": self.now(),
                "labels": labels,
                "annotations": {**annotations, REVISION: str(revision)},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": dep["metadata"]["name"],
                        "uid": dep["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {**dep["spec"]["selector"]["matchLabels"], "pod-template-hash": thash}},
                "template": template,
            },
            "status": {"replicas": 0},
        }
        self._stamp(rs)
        self.objects[("apps", "replicasets", ns, name)] = rs
        return rs

    def _pods(self, ns: str, rs: dict[str, Any]) -> list[dict[str, Any]]:
        return sorted(self.owned(ns, "pods", rs["metadata"]["uid"]), key=lambda p: p["metadata"]["name"])

    def _sync_pods(self, ns: str, rs: dict[str, Any]) -> None:
        pods = self._pods(ns, rs)
        for pod in pods[rs["spec"]["replicas"] :]:
            del self.objects[("", "pods", ns, pod["metadata"]["name"])]
        for _ in range(rs["spec"]["replicas"] - len(pods)):
            name = f"{rs['metadata']['name']}-{next(self._pod_ids):05d}"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": self.now(),
                    "labels": dict(rs["spec"]["template"]["metadata"]["labels"]),
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "name": rs["metadata"]["name"],
                            "uid": rs["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": copy.deepcopy(rs["spec"]["template"]["spec"]),
            }
            self._born[pod["metadata"]["uid"]] = self.clock
            self.objects[("", "pods", ns, name)] = pod
        for pod in self._pods(ns, rs):
            self._pod_status(pod)

    def _pod_ready(self, pod: dict[str, Any]) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))

    def _pod_status(self, pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        born = self._born[pod["metadata"]["uid"]]
        image, age = container["image"], self.clock - born
        mode = self.mode(image)
        name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
        base = {
            "name": container["name"],
            "image": image,
            "imageID": "",
            "restartCount": 0,
            "started": False,
            "ready": False,
        }
        phase, ready = "Pending", False
        if mode == "pull-error":
            waiting = (
                (
                    "ErrImagePull",
                    f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": not found',
                )
                if age < 3 * self.tick
                else ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            )
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        elif age < self.ready_after:
            state = {"waiting": {"reason": "ContainerCreating"}}
        elif mode == "crash-loop":
            phase = "Running"
            base["restartCount"] = int(age // self.tick)
            state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={container['name']} "
                    f"pod={name}_{ns}({pod['metadata']['uid']})",
                }
            }
            base["lastState"] = {
                "terminated": {"exitCode": 1, "reason": "Error", "startedAt": self.now(), "finishedAt": self.now()}
            }
        else:
            phase, ready = "Running", mode == "ok"
            state = {"running": {"startedAt": self.now(born + self.ready_after)}}
            base.update(started=True, ready=ready)
        pod["status"] = {
            "phase": phase,
            "podIP": "198.51.100.20",
            "startTime": self.now(born),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": self.now()}],
            "containerStatuses": [{**base, "state": state}],
        }

    # --- what tests read -------------------------------------------------------------------------

    def deployment(self, ns: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[("apps", "deployments", ns, name)])

    def running_images(self, ns: str, name: str) -> list[str]:
        """Images of the ready pods of the Deployment, once the controller has caught up with the last write."""
        with self.lock:
            self.reconcile()
            dep = self.objects[("apps", "deployments", ns, name)]
            return sorted(
                p["spec"]["containers"][0]["image"]
                for rs in self.owned(ns, "replicasets", dep["metadata"]["uid"])
                for p in self._pods(ns, rs)
                if self._pod_ready(p)
            )
