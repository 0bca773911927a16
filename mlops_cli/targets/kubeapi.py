"""The Kubernetes API through the official client: connection, bounded retries, one-line errors.

Credentials, first match wins: `kubernetes.server` + `kubernetes.token` (e.g. from Jenkins
credentials as MLOPS_KUBERNETES__SERVER/TOKEN); a kubeconfig (`kubernetes.kubeconfig`,
KUBECONFIG, ~/.kube/config) and its context, when one is given or exists; else, as kubectl
does, the pod's service account when running in a cluster.
Bodies and answers are plain dicts (the API's JSON), so the rollout logic reads like the API docs.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, StageFailed, TemporaryError, UsageError
from ..retry import call_with_retries
from ..secrets import url_without_userinfo
from ..settings import KubernetesSettings, is_loopback
from ..ui import progress

try:
    import urllib3
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
except ImportError as exc:  # the registry turns this into "pip install ..."
    raise ImportError(f"the kubernetes target needs the kubernetes client ({exc})", name="kubernetes") from exc

JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"  # server-side apply; the client sends the body as JSON, which is YAML
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

# kind -> (resource as RBAC names it, API class, method suffix) for the built-in kinds we apply
BUILTIN = {
    "Deployment": ("deployments.apps", "AppsV1Api", "namespaced_deployment"),
    "Service": ("services", "CoreV1Api", "namespaced_service"),
    "Ingress": ("ingresses.networking.k8s.io", "NetworkingV1Api", "namespaced_ingress"),
    "HorizontalPodAutoscaler": (
        "horizontalpodautoscalers.autoscaling",
        "AutoscalingV2Api",
        "namespaced_horizontal_pod_autoscaler",
    ),
    "PodDisruptionBudget": ("poddisruptionbudgets.policy", "PolicyV1Api", "namespaced_pod_disruption_budget"),
    "ServiceAccount": ("serviceaccounts", "CoreV1Api", "namespaced_service_account"),
    "NetworkPolicy": ("networkpolicies.networking.k8s.io", "NetworkingV1Api", "namespaced_network_policy"),
}
# kind -> (group, version, plural) for custom resources (no strategic merge for these: merge patch)
CUSTOM = {
    "Route": ("route.openshift.io", "v1", "routes"),
    "ServiceMonitor": ("monitoring.coreos.com", "v1", "servicemonitors"),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
}


class NotFound(StageFailed):
    """The object (not its namespace) does not exist."""


class Conflict(StageFailed):
    """409: the object changed under us, or already exists; read it again and retry."""


class ApplyConflict(Conflict):
    """409 to a server-side apply: fields it sets to other values are owned by other field managers."""

    def __init__(self, message: str, owners: dict[str, list[str]]):
        super().__init__(message)
        self.owners = owners  # manager -> the fields (".spec.replicas") it owns that the apply would change

    def summary(self) -> str:
        return "; ".join(
            f'"{who}" owns {", ".join(fields[:3])}' + (f" and {len(fields) - 3} more" if len(fields) > 3 else "")
            for who, fields in sorted(self.owners.items())
        )


def _conflict_owners(details: dict[str, Any]) -> dict[str, list[str]]:
    """manager -> fields, from the FieldManagerConflict causes of a 409 (`conflict with "M" using apps/v1`)."""
    owners: dict[str, list[str]] = {}
    for cause in details.get("causes") or []:
        if cause.get("reason") != "FieldManagerConflict":
            continue
        match = re.search(r'conflict with "([^"]*)"', cause.get("message") or "")
        owners.setdefault(match.group(1) if match else "another manager", []).append(cause.get("field") or "?")
    return owners


def _status(exc: ApiException) -> dict[str, Any]:
    """The metav1.Status the API server sends with an error (or an empty one)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def kubeconfig_path(settings: KubernetesSettings) -> Path:
    if settings.kubeconfig is not None:
        return settings.kubeconfig.expanduser()
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), None)
    return Path(first).expanduser() if first else Path("~/.kube/config").expanduser()


def _configuration(settings: KubernetesSettings) -> tuple[Any, str | None]:
    """A client Configuration and the bearer token to send (None when the config carries its own auth)."""
    cfg = client.Configuration()
    if settings.server:
        if settings.token is None:
            raise ConfigError(
                "kubernetes.server is set but no token", hint="set MLOPS_KUBERNETES__TOKEN (a service account token)"
            )
        cfg.host = settings.server.rstrip("/")
        cfg.verify_ssl = not settings.insecure
        if settings.ca_file is not None:
            cfg.ssl_ca_cert = str(settings.ca_file)
        return cfg, settings.token.get_secret_value()
    path = kubeconfig_path(settings)
    explicit = settings.kubeconfig is not None or settings.context is not None or bool(os.environ.get("KUBECONFIG"))
    # as kubectl: a kubeconfig that is there (or asked for) wins; the pod's service account only without one,
    # else a Jenkins agent pod would silently deploy with its own account to the cluster it runs in
    if not explicit and not path.is_file() and os.environ.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT.is_file():
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise ConfigError(f"in-cluster credentials are not usable: {str(exc).splitlines()[0]}") from None
        return cfg, None
    if not path.is_file():
        raise ConfigError(
            f"no Kubernetes credentials: no kubeconfig at {path}, not running in a cluster, "
            "and kubernetes.server is not set",
            hint="run `oc login` / set KUBECONFIG, or set MLOPS_KUBERNETES__SERVER and __TOKEN",
        )
    try:
        contexts, current = config.list_kube_config_contexts(config_file=str(path))
    except (ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"kubeconfig {path} is not usable: {str(exc).splitlines()[0]}") from None
    names = [c["name"] for c in contexts or []]
    wanted = settings.context or (current or {}).get("name")
    if not wanted:
        raise ConfigError(
            f"kubeconfig {path} has no current context", hint="set kubernetes.context or `kubectl config use-context`"
        )
    if wanted not in names:
        raise ConfigError(f"context {wanted!r} is not in kubeconfig {path} (known: {', '.join(names) or 'none'})")
    try:
        config.load_kube_config(config_file=str(path), context=wanted, client_configuration=cfg, persist_config=False)
    except (ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"kubeconfig {path}, context {wanted!r}: {str(exc).splitlines()[0]}") from None
    # not https (http://, or no scheme at all, which urllib3 takes as http) with credentials: clear text
    if (
        not cfg.host.lower().startswith("https://")
        and (cfg.api_key or cfg.password)
        and not (
            cfg.host.lower().startswith("http://")
            and is_loopback(urlsplit(cfg.host).hostname or "")
            and settings.insecure
        )
    ):
        shown = url_without_userinfo(cfg.host)  # never the user:password of a server URL
        raise ConfigError(
            f"kubeconfig {path}, context {wanted!r}: server {shown} is plain http and the user's "
            "credentials would go out in clear text",
            hint="use https:// (plain http only to a loopback address, with kubernetes.insecure: true)",
        )
    return cfg, None


class Kube:
    """A few verbs on a few kinds, with bounded retries and errors a person can act on."""

    def __init__(self, settings: KubernetesSettings):
        self.settings = settings
        cfg, token = _configuration(settings)
        cfg.retries = False  # our own bounded retries, with backoff and a message
        self.server = cfg.host
        if token is not None:
            self.api = client.ApiClient(cfg, header_name="Authorization", header_value=f"Bearer {token}")
        else:
            self.api = client.ApiClient(cfg)

    def close(self) -> None:
        self.api.close()

    def _api(self, name: str) -> Any:
        return getattr(client, name)(self.api)

    def call(self, verb: str, resource: str, namespace: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args) as JSON-like data; bounded retries of what a retry may cure; one-line errors."""
        kwargs.setdefault("_request_timeout", (self.settings.api_timeout_s, self.settings.api_timeout_s))

        def once() -> Any:
            try:
                answer = fn(*args, **kwargs)
                return answer if isinstance(answer, (dict, list)) else self.api.sanitize_for_serialization(answer)
            except ApiException as exc:
                raise self._error(exc, verb, resource, namespace) from None
            except urllib3.exceptions.HTTPError as exc:
                reason = getattr(exc, "reason", None) or exc
                raise TemporaryError(f"cannot reach the Kubernetes API server at {self.server}: {reason}") from None

        def say(exc: BaseException, delay: float) -> None:
            progress(f"{verb} {resource}: {getattr(exc, 'message', exc)}; retrying in {delay:.1f} s")

        return call_with_retries(
            once,
            retries=self.settings.api_retries,
            backoff_s=self.settings.retry_backoff_s,
            on_retry=say,
            give_up_hint="check kubernetes.server / the kubeconfig's cluster and the network",
        )

    def _error(self, exc: ApiException, verb: str, resource: str, namespace: str) -> Exception:
        status = _status(exc)
        message = status.get("message") or exc.reason or f"HTTP {exc.status}"
        details = status.get("details") or {}
        where = f"in namespace {namespace}" if namespace else "cluster-wide"
        if not exc.status and str(exc.reason or "").startswith("SSLError"):  # the client's wrapping of urllib3's
            detail = [line for line in str(exc.reason).splitlines()[1:] if line.strip()] or ["SSLError"]
            return ConfigError(
                f"TLS verification of the Kubernetes API server at {self.server} failed: {detail[-1]}",
                hint="set kubernetes.ca_file to the cluster's CA bundle "
                "(kubernetes.insecure: true only for a test cluster)",
            )
        if exc.status == 401:
            return StageFailed(
                f"the API server at {self.server} rejected the credentials (401 Unauthorized)",
                hint="the token or kubeconfig user has expired or is wrong",
            )
        if exc.status == 403:
            return StageFailed(
                f"forbidden: not allowed to {verb} {resource} {where} ({message})",
                hint=f"grant the verb {verb!r} on {resource!r} to this user or service account (RBAC)",
            )
        if exc.status == 404 and details.get("kind") == "namespaces":
            return UsageError(
                f"namespace {details.get('name') or namespace} does not exist on {self.server}",
                hint="create it (oc new-project) or fix kubernetes.namespaces",
            )
        if exc.status == 404:
            return NotFound(f"{message} in namespace {namespace}" if namespace else message)
        if exc.status == 409 and _conflict_owners(details):
            return ApplyConflict(message.splitlines()[0], _conflict_owners(details))
        if exc.status == 409:
            return Conflict(message)
        if exc.status == 429 or (exc.status or 0) >= 500:
            return TemporaryError(f"the API server answered {exc.status} to {verb} {resource}: {message}")
        return StageFailed(f"the API server refused to {verb} {resource} {where}: {exc.status} {message}")

    # --- the verbs the target uses ---------------------------------------------------------------

    def _resolve(self, kind: str, verb: str) -> tuple[str, Callable[..., Any], tuple[Any, ...]]:
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            fn = {"get": "get", "create": "create", "patch": "patch", "delete": "delete"}[
                verb
            ] + "_namespaced_custom_object"
            return f"{plural}.{group}", getattr(self._api("CustomObjectsApi"), fn), (group, version)
        resource, api, suffix = BUILTIN[kind]
        fn = {"get": "read", "create": "create", "patch": "patch", "delete": "delete"}[verb] + "_" + suffix
        return resource, getattr(self._api(api), fn), ()

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        resource, fn, lead = self._resolve(kind, "get")
        if kind in CUSTOM:
            return self.call("get", resource, namespace, fn, *lead, namespace, CUSTOM[kind][2], name)
        return self.call("get", resource, namespace, fn, name, namespace)

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        resource, fn, lead = self._resolve(kind, "create")
        if kind in CUSTOM:
            return self.call("create", resource, namespace, fn, *lead, namespace, CUSTOM[kind][2], body)
        return self.call("create", resource, namespace, fn, namespace, body)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the object (its ReplicaSets and pods go in the background, as kubectl's default); False if absent."""
        resource, fn, lead = self._resolve(kind, "delete")
        try:
            if kind in CUSTOM:
                self.call(
                    "delete",
                    resource,
                    namespace,
                    fn,
                    *lead,
                    namespace,
                    CUSTOM[kind][2],
                    name,
                    propagation_policy="Background",
                )
            else:
                self.call("delete", resource, namespace, fn, name, namespace, propagation_policy="Background")
        except NotFound:
            return False
        return True

    def patch(self, kind: str, namespace: str, name: str, body: Any) -> dict[str, Any]:
        """A list body is a JSON patch; a dict a strategic merge patch, or a merge patch for custom kinds.

        Client versions differ here: from v34 the patch methods take `_content_type` (and custom
        objects default to merge-patch+json); v30-v33 take none, choose json-patch+json for a
        list and strategic-merge-patch+json for a dict on built-in kinds, and always send
        merge-patch+json for custom objects. So the type is given wherever the method takes it,
        and custom resources, which refuse strategic merge (415), get merge patches only.
        """
        resource, fn, lead = self._resolve(kind, "patch")
        if kind in CUSTOM:
            if not isinstance(body, dict):
                raise ValueError("custom resources take a merge patch (a mapping)")
            content = MERGE
        else:
            content = JSON_PATCH if isinstance(body, list) else STRATEGIC
        params = inspect.signature(fn).parameters
        extra = {"_content_type": content} if "_content_type" in params else {}
        if "field_manager" in params:  # our rollbacks' and scale-downs' writes: an Update by our manager
            extra["field_manager"] = self.settings.field_manager
        if kind in CUSTOM:
            return self.call("patch", resource, namespace, fn, *lead, namespace, CUSTOM[kind][2], name, body, **extra)
        return self.call("patch", resource, namespace, fn, name, namespace, body, **extra)

    def apply(self, kind: str, namespace: str, name: str, body: dict[str, Any], force: bool = False) -> dict[str, Any]:
        """Server-side apply of the whole object as field manager `kubernetes.field_manager`.

        The API server merges it, removes the fields this manager applied before and no longer
        applies, creates the object when it is absent, and answers 409 (ApplyConflict) when the
        apply would change a field another manager owns, unless `force` takes it over. RBAC: patch
        (and create for a new object).
        """
        resource, fn, lead = self._resolve(kind, "patch")
        if "_content_type" not in inspect.signature(fn).parameters:
            raise ConfigError(
                "server-side apply needs a kubernetes client whose patch methods take _content_type "
                "(v37 does; v34 and older send merge patches to custom resources)",
                hint="pip install -U 'kubernetes>=37'",
            )
        options = {"field_manager": self.settings.field_manager, "force": force, "_content_type": APPLY}
        if kind in CUSTOM:
            answer = self.call(
                "patch", resource, namespace, fn, *lead, namespace, CUSTOM[kind][2], name, body, **options
            )
            # the client maps only 200 for custom objects: the 201 of an apply that created one comes back as None
            return answer if answer is not None else self.get(kind, namespace, name)
        return self.call("patch", resource, namespace, fn, name, namespace, body, **options)

    def list(self, kind: str, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        if kind == "ReplicaSet":
            fn, resource = self._api("AppsV1Api").list_namespaced_replica_set, "replicasets.apps"
        elif kind == "Pod":
            fn, resource = self._api("CoreV1Api").list_namespaced_pod, "pods"
        else:
            raise ValueError(kind)
        return self.call("list", resource, namespace, fn, namespace, label_selector=label_selector).get("items") or []
