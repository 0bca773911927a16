"""`mlops render --kustomize`: a Kustomize base and one overlay per environment, for Argo CD / Flux.

Generated from the same templates and settings as `mlops render --env` and the kubernetes deploy
target (mlops_cli/render.py), never written by hand, so they cannot drift: the base is the test
environment's validated objects without a namespace; each overlay sets its namespace and holds,
as RFC 6902 JSON patches, exactly what differs in that environment's render (host, the
ServiceMonitor's namespace, ...). `kubectl kustomize overlays/ENV` gives the objects
`mlops render --env ENV` writes (tests/integration/kubernetes/test_gitops.py checks it).
Why Kustomize and not a Helm chart: a chart would carry a second template language (Go templates)
beside ours, and its values could drift from the CLI's settings; a base plus overlays is plain
YAML we generate and validate, and both Argo CD and Flux (and `kubectl apply -k`) read it natively.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UsageError
from .render import (
    ENVS,
    KUBERNETES_FROM,
    OPENSHIFT_FROM,
    Rendered,
    RenderResult,
    check_image,
    render,
    template_env,
    to_yaml,
    validate,
)
from .settings import Settings
from .state import State

KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}


def _pointer(path: list[str]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def json_patch(base: Any, target: Any, path: list[str] | None = None) -> list[dict[str, Any]]:
    """RFC 6902 operations turning base into target: maps field by field, lists and scalars as a whole."""
    path = path or []
    if isinstance(base, dict) and isinstance(target, dict):
        ops: list[dict[str, Any]] = []
        for key in base:
            if key not in target:
                ops.append({"op": "remove", "path": _pointer(path + [key])})
        for key, value in target.items():
            if key not in base:
                ops.append({"op": "add", "path": _pointer(path + [key]), "value": copy.deepcopy(value)})
            elif base[key] != value:
                ops += json_patch(base[key], value, path + [key])
        return ops
    return [] if base == target else [{"op": "replace", "path": _pointer(path), "value": copy.deepcopy(target)}]


def _without_namespace(manifest: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    out["metadata"].pop("namespace", None)
    return out


def _filename(index: int, manifest: dict[str, Any]) -> str:
    return f"{index:02d}-{manifest['kind'].lower()}.yaml"


def write(rendered: dict[str, Rendered], out: Path) -> list[Path]:
    """base/ from the test environment's objects, overlays/ENV/ with each environment's differences."""
    base_objects = [_without_namespace(m) for m in rendered["test"].manifests]
    names = [_filename(i, m) for i, m in enumerate(base_objects, start=1)]
    written = []
    (out / "base").mkdir(parents=True, exist_ok=True)
    for old in (out / "base").glob("[0-9][0-9]-*.yaml"):
        old.unlink()
    for filename, manifest in zip(names, base_objects):
        written.append(out / "base" / filename)
        written[-1].write_text(to_yaml(manifest), encoding="utf-8")
    written.append(out / "base" / "kustomization.yaml")
    written[-1].write_text(to_yaml({**KUSTOMIZATION, "resources": names}), encoding="utf-8")
    for env, result in rendered.items():
        keyed = {(m["kind"], m["metadata"]["name"]): _without_namespace(m) for m in result.manifests}
        if set(keyed) != {(m["kind"], m["metadata"]["name"]) for m in base_objects}:
            raise UsageError(f"the {env} environment renders other objects than test, which one base cannot hold")
        overlay = out / "overlays" / env
        overlay.mkdir(parents=True, exist_ok=True)
        for old in overlay.glob("patch-*.yaml"):  # a re-render leaves no stale patch behind
            old.unlink()
        patches = []
        for filename, manifest in zip(names, base_objects):
            ops = json_patch(manifest, keyed[(manifest["kind"], manifest["metadata"]["name"])])
            if ops:
                written.append(overlay / f"patch-{filename}")
                written[-1].write_text(to_yaml(ops), encoding="utf-8")
                patches.append(
                    {
                        "path": written[-1].name,
                        "target": {"kind": manifest["kind"], "name": manifest["metadata"]["name"]},
                    }
                )
        kustomization: dict[str, Any] = {**KUSTOMIZATION, "namespace": result.namespace, "resources": ["../../base"]}
        if patches:
            kustomization["patches"] = patches
        written.append(overlay / "kustomization.yaml")
        written[-1].write_text(to_yaml(kustomization), encoding="utf-8")
    return written


RELAY_SELECTOR = {"app.kubernetes.io/name": "mlops-alert-relay", "app.kubernetes.io/instance": "mlops-alert-relay"}
PART_OF = {"app.kubernetes.io/managed-by": "mlops", "app.kubernetes.io/part-of": "mlops"}


def _template(name: str, values: dict[str, Any]) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(template_env().get_template(name).render(**values))


def relay_config(settings: Settings) -> dict[str, str]:
    """The relay pod's MLOPS_* settings, from the CLI's own (no secrets: those come from the Secret)."""
    relay, kafka = settings.relay, settings.notify.kafka
    sinks = relay.sinks or list(settings.notify.notifiers)
    config = {
        "MLOPS_RELAY__SINKS": json.dumps(sinks),
        "MLOPS_RELAY__RETRIES": str(relay.retries),
        "MLOPS_RELAY__QUEUE_MAX": str(relay.queue_max),
        "MLOPS_RELAY__MAX_BODY_BYTES": str(relay.max_body_bytes),
    }
    if relay.runbook_base_url:
        config["MLOPS_RELAY__RUNBOOK_BASE_URL"] = relay.runbook_base_url
    if "kafka" in sinks:
        config.update(
            MLOPS_NOTIFY__KAFKA__BOOTSTRAP_SERVERS=",".join(kafka.bootstrap_servers),
            MLOPS_NOTIFY__KAFKA__TOPIC=kafka.topic,
            MLOPS_NOTIFY__KAFKA__SECURITY_PROTOCOL=kafka.security_protocol,
        )
    return config


def monitoring_manifests(settings: Settings) -> list[dict[str, Any]]:
    """The PrometheusRule, one ConfigMap per Grafana dashboard (for Grafana's sidecar) and, with
    kubernetes.relay_image, `mlops alert-relay` (ConfigMap, PVC, Deployment, Service, NetworkPolicy)."""
    import yaml

    k = settings.kubernetes
    namespace = k.monitoring_namespace or k.namespaces.prod
    templates = resources.files("mlops_cli") / "templates"
    rule = yaml.safe_load((templates / "monitoring" / "prometheusrule.yaml").read_text(encoding="utf-8"))
    rule["metadata"]["namespace"] = namespace
    manifests = [rule]
    for dashboard in sorted((templates / "dashboards").iterdir(), key=lambda p: p.name):
        if dashboard.name.endswith(".json"):
            manifests.append(
                _template(
                    "dashboard-configmap.yaml.j2",
                    dict(
                        namespace=namespace,
                        dashboard_name=f"grafana-dashboard-{dashboard.name[:-5]}",
                        dashboard_labels={"grafana_dashboard": "1", **PART_OF},
                        dashboard_data={dashboard.name: dashboard.read_text(encoding="utf-8")},
                    ),
                )
            )
    if k.relay_image:
        image = check_image(k.relay_image, "prod", k.allow_tag)
        allowed = (
            k.network_policy_from
            if k.network_policy_from is not None
            else (OPENSHIFT_FROM if k.flavour == "openshift" else KUBERNETES_FROM)
        )
        env = [
            {"name": "HOME", "value": "/tmp"},
            {"name": "MLOPS_WORKDIR", "value": "/tmp/mlops"},
            {"name": "MLOPS_RELAY__TOKEN_FILE", "value": "/etc/mlops-relay/token"},
            {"name": "MLOPS_RELAY__QUEUE_DIR", "value": "/var/lib/mlops-relay/queue"},
            {"name": "MLOPS_RELAY__TLS_CERT_FILE", "value": "/etc/mlops-relay-tls/tls.crt"},
            {"name": "MLOPS_RELAY__TLS_KEY_FILE", "value": "/etc/mlops-relay-tls/tls.key"},
        ]
        config = relay_config(settings)
        if "slack" in json.loads(config["MLOPS_RELAY__SINKS"]):
            env.append({"name": "MLOPS_NOTIFY__SLACK__WEBHOOK_URL_FILE", "value": "/etc/mlops-relay/slack-webhook-url"})
        values = dict(
            namespace=namespace,
            relay_labels={**RELAY_SELECTOR, **PART_OF},
            relay_selector=RELAY_SELECTOR,
            relay_image=image,
            relay_port=settings.relay.port,
            relay_env=env,
            relay_config=config,
            image_pull_secrets=[{"name": n} for n in k.image_pull_secrets],
            relay_peers=[
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(allowed)}
                        ]
                    }
                }
            ],
        )
        for name in ("relay-configmap", "relay-pvc", "relay-deployment", "relay-service", "relay-networkpolicy"):
            manifests.append(_template(f"{name}.yaml.j2", values))
    return manifests


def write_monitoring(manifests: list[dict[str, Any]], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("[0-9][0-9]-*.yaml"):
        old.unlink()
    written = []
    for index, manifest in enumerate(manifests, start=1):
        written.append(folder / f"{index:02d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml")
        written[-1].write_text(to_yaml(manifest), encoding="utf-8")
    written.append(folder / "kustomization.yaml")
    written[-1].write_text(to_yaml({**KUSTOMIZATION, "resources": [p.name for p in written[:-1]]}), encoding="utf-8")
    return written


def run(
    settings: Settings, out: Path, image: str | None = None, allow_tag: bool = False, model_ref: str | None = None
) -> RenderResult:
    """Render and validate every environment, then write the base and the overlays to out/."""
    state = State.load(settings.workdir)
    rendered = {
        env: render(settings, state, env, image=image, allow_tag=allow_tag, model_ref=model_ref) for env in ENVS
    }
    monitoring = monitoring_manifests(settings)
    for manifests in [r.manifests for r in rendered.values()] + [monitoring]:
        validate(manifests, settings.kubernetes.kubernetes_version)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    files = write(rendered, out) + write_monitoring(monitoring, out / "monitoring")
    first = rendered["prod"]
    return RenderResult(
        env="+".join(ENVS),
        namespace=",".join(r.namespace for r in rendered.values()),
        image=first.image,
        flavour=settings.kubernetes.flavour,
        files=[str(p) for p in files],
    )
