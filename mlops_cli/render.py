"""Kubernetes/OpenShift manifests from deploy/openshift/*.yaml.j2, per environment, checked before use.

The templates carry wiring only; every value comes from here (state + settings) and is
quoted by `tojson`. Each rendered object passes `kubernetes-validate` in strict mode (its
schemas ship in the package, no network), Route and ServiceMonitor a JSON schema of ours
(mlops_cli/schemas/), since no offline schema of those ships anywhere.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict

from serving.spec import BundleError, load_spec

from . import DISTRIBUTION
from .errors import ConfigError, PrerequisiteError, StageFailed, UsageError
from .settings import Settings
from .state import State
from .ui import progress

ENVS = ("test", "prod")
DIGEST_REF = re.compile(r"^(?P<repo>[a-z0-9]+(?:[._/:-][a-z0-9]+)*)@sha256:[0-9a-f]{64}$")
TAG_REF = re.compile(r"^(?P<repo>[a-z0-9]+(?:[._/:-][a-z0-9]+)*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ANNOTATION = "mlops.io/"
CHANGE_CAUSE = "kubernetes.io/change-cause"
TRACK = "mlops.io/track"  # pod label: stable | canary (a canary release); the ServiceMonitor makes it `track`
OWN_SCHEMAS = {
    ("route.openshift.io/v1", "Route"): "route.openshift.io-v1-route.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io-v1-httproute.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com-v1-servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com-v1-prometheusrule.json",
}


@dataclass(frozen=True)
class Rendered:
    env: str
    namespace: str
    name: str
    image: str
    manifests: list[dict[str, Any]]
    values: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # what the templates got

    def get(self, kind: str) -> dict[str, Any] | None:
        return next((m for m in self.manifests if m["kind"] == kind), None)


def check_env(env: str) -> str:
    if env not in ENVS:
        raise UsageError(f"unknown environment {env!r}; known: {', '.join(ENVS)}")
    return env


def app_name(settings: Settings, model_name: str) -> str:
    """The objects' name: kubernetes.name, else the model's name made a DNS label."""
    if settings.kubernetes.name:
        name = settings.kubernetes.name
        if not DNS_LABEL.match(name) or len(name) > 63:
            raise ConfigError(
                f"kubernetes.name {name!r} is not a DNS label (lower-case letters, digits and '-', "
                "at most 63, starting and ending alphanumeric)"
            )
        return name
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise ConfigError(f"the model name {model_name!r} gives no valid Kubernetes name", hint="set kubernetes.name")
    return name


def check_image(image: str, env: str, allow_tag: bool) -> str:
    """A repository@sha256 reference; a moving tag only outside prod, or with --allow-tag."""
    image = image.strip()
    if DIGEST_REF.match(image):
        return image
    if "@" in image or not TAG_REF.match(image):
        raise UsageError(f"{image!r} is not an image reference (REPOSITORY@sha256:<64 hex> or REPOSITORY:TAG)")
    if env == "prod" and not allow_tag:
        raise UsageError(
            f"{image} is a moving tag: production takes an image pinned by digest",
            hint="give REPOSITORY@sha256:DIGEST, or --allow-tag to accept the tag anyway",
        )
    progress(f"warning: {image} is a moving tag; what runs may change under the same name")
    return image


def _label(value: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63].strip("-_.")
    return value if LABEL_VALUE.match(value) else ""


def drain_seconds(settings: Settings, state: State) -> float:
    """How long the image's server drains after SIGTERM: the bundle's spec.json, else assemble.drain_seconds."""
    if state.bundle is not None:
        try:
            return load_spec(state.bundle.path).server.drain_seconds
        except BundleError:
            pass
    return settings.assemble.drain_seconds


def check_grace(settings: Settings, state: State) -> None:
    """The kubelet's grace period covers the preStop pause, the server's drain and finishing in-flight requests.

    The server stops accepting only after its drain, so a grace period not longer than both kills
    requests mid-flight (SIGKILL), which a zero-downtime rollout must not do.
    """
    k = settings.kubernetes
    drain = drain_seconds(settings, state)
    needed = k.prestop_sleep_s + drain
    if k.termination_grace_s <= needed:
        raise ConfigError(
            f"kubernetes.termination_grace_s ({k.termination_grace_s}) must be longer than "
            f"kubernetes.prestop_sleep_s ({k.prestop_sleep_s}) plus the server's drain ({drain:g} s): "
            "in-flight requests would be killed",
            hint=f"set kubernetes.termination_grace_s to at least {math.floor(needed) + 10}",
        )


# The server's memory under its own bounds (docs/bundle.md, "Limits"; figures: bench/memory.py):
# baseline (runtime + model) + max_batch_bytes x 25 (the batch being decoded and scored)
# + max_inflight_bytes x 4 (bodies admitted, their answers) + a margin.
RUNTIME_BASELINE_MIB = 150
BATCH_MULTIPLIER, INFLIGHT_MULTIPLIER, MARGIN_MIB = 25, 4, 64
_SERVER_DEFAULTS = {"max_batch_bytes": 1_048_576, "max_inflight_bytes": 8_388_608}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {
    None: 1,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def quantity_bytes(value: str) -> float | None:
    """A Kubernetes memory quantity in bytes ("512Mi", "1G", "268435456"); None if not of those forms."""
    match = _QUANTITY.match(str(value).strip())
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


def memory_needed_mib(settings: Settings, state: State) -> float:
    """What the server needs under its bounds: the formula above with the bundle's spec.json
    (else the runtime's defaults) and the model artifact's size added to the baseline."""
    server, artifact = dict(_SERVER_DEFAULTS), 0
    if state.bundle is not None:
        try:
            spec = load_spec(state.bundle.path)
            # the runtime's own reading of the section (its defaults; max_inflight_bytes holds at least one body)
            server = {
                "max_batch_bytes": spec.server.max_batch_bytes,
                "max_inflight_bytes": spec.server.max_inflight_bytes,
            }
            artifact = (Path(state.bundle.path) / spec.model.artifact).stat().st_size
        except (OSError, ValueError, BundleError):
            pass
    mib = 1 << 20
    return (
        RUNTIME_BASELINE_MIB
        + artifact / mib
        + server["max_batch_bytes"] * BATCH_MULTIPLIER / mib
        + server["max_inflight_bytes"] * INFLIGHT_MULTIPLIER / mib
        + MARGIN_MIB
    )


def check_memory(settings: Settings, state: State) -> None:
    """A memory limit below what the server's own bounds let it use gets it OOM-killed under load."""
    limit = quantity_bytes(settings.kubernetes.resources.memory_limit)
    needed = memory_needed_mib(settings, state)
    if limit is not None and limit < needed * (1 << 20):
        raise ConfigError(
            f"kubernetes.resources.memory_limit ({settings.kubernetes.resources.memory_limit}) is below "
            f"the {math.ceil(needed)}Mi the server may use under its bounds (baseline + "
            "max_batch_bytes x 25 + max_inflight_bytes x 4 + margin, docs/bundle.md): it would be "
            "OOM-killed under load",
            hint=f"raise memory_limit to {math.ceil(needed / 64) * 64}Mi or lower the bundle's "
            "server.max_inflight_bytes",
        )


@dataclass(frozen=True)
class ModelIdentity:
    """What the manifests say about the model: state's validated model, a model reference's metadata, or
    (GitOps from an image alone) just a name; what is not known is left out, never made up."""

    name: str
    """The objects' name comes from it (unless kubernetes.name)."""
    version: str = ""
    sha256: str = ""
    ref: str = ""
    known: bool = True
    """False when the name is only the image repository's, not a model's."""


def model_identity(settings: Settings, state: State, image: str | None, model_ref: str | None) -> ModelIdentity:
    """--model REF (its metadata from the source, no download) > state's validated model > the image's repository."""
    if model_ref:
        from .sources import get_source, parse_ref

        ref = parse_ref(model_ref)
        meta = get_source(ref.scheme, settings).fetch_metadata(ref)
        return ModelIdentity(meta.name, meta.version, meta.sha256, str(ref.pinned(meta.version)))
    if state.model is not None:
        model, _ = state.require_validated()
        return ModelIdentity(model.name, model.version, model.sha256, model.ref)
    if image is None:
        raise PrerequisiteError(
            "nothing to render: no validated model in state, and neither --image nor --model given",
            hint="give --image REPOSITORY@sha256:DIGEST (and --model REF), or run the pipeline",
        )
    repository = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return ModelIdentity(settings.kubernetes.name or repository, known=False)


def context(
    settings: Settings, state: State, env: str, image: str, change_cause: str, model: ModelIdentity | None = None
) -> dict[str, Any]:
    k = settings.kubernetes
    check_grace(settings, state)
    check_memory(settings, state)
    if model is None:
        model = model_identity(settings, state, image, None)
    name = app_name(settings, model.name)
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
    labels = {**selector, "app.kubernetes.io/managed-by": "mlops", "app.kubernetes.io/part-of": "mlops"}
    if _label(model.version):
        labels["app.kubernetes.io/version"] = _label(model.version)
    known = {
        "model-name": model.name if model.known else "",
        "model-version": model.version,
        "model-sha256": model.sha256,
        "model-ref": model.ref,
    }
    model_annotations = {ANNOTATION + key: value for key, value in known.items() if value}
    model_annotations[ANNOTATION + "image"] = image
    host = k.hosts.get(env)
    if k.flavour == "kubernetes" and k.tls_secret and not host:
        raise ConfigError(f"kubernetes.tls_secret needs a host for {env}", hint=f"set kubernetes.hosts.{env}")
    return dict(
        name=name,
        namespace=getattr(k.namespaces, env),
        labels=labels,
        selector=selector,
        image=image,
        pod_labels={**labels, TRACK: "stable"},
        **split(settings, name, None, 0),
        # a tag may point elsewhere than a node's cached copy of it: pull it each time; a digest cannot move
        image_pull_policy="IfNotPresent" if DIGEST_REF.match(image) else "Always",
        annotations={**model_annotations, CHANGE_CAUSE: change_cause},
        pod_annotations=model_annotations,
        replicas=max(k.replicas, k.min_replicas),
        port=k.port,
        resources=k.resources.model_dump(),
        command=["python", "-m", "serving", "/app", "--host", "0.0.0.0", "--port", str(k.port)],
        startup_failures=max(1, math.ceil(k.startup_timeout_s / 5)),
        termination_grace_s=k.termination_grace_s,
        prestop_sleep_s=k.prestop_sleep_s,
        progress_deadline_s=k.progress_deadline_s,
        min_replicas=k.min_replicas,
        max_replicas=k.max_replicas,
        cpu_target_percent=k.cpu_target_percent,
        custom_metric=k.custom_metric.model_dump() if k.custom_metric else None,
        host=host,
        ingress_class=k.ingress_class,
        tls_secret=k.tls_secret,
        **pod_placement(settings, name, selector),
    )


def split(settings: Settings, name: str, canary_service: str | None, weight: int) -> dict[str, Any]:
    """The traffic router's values: all to the Service `name`, or `weight` percent to `canary_service`."""
    stable_weight = 100 - weight if canary_service else 100
    refs = [{"name": name, "port": 80, "weight": stable_weight}]
    if canary_service:
        refs.append({"name": canary_service, "port": 80, "weight": weight})
    gateway = settings.kubernetes.gateway or ""
    parent = dict(zip(("namespace", "name"), gateway.split("/"))) if "/" in gateway else {"name": gateway}
    ingress = (
        {"nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": str(weight)}
        if canary_service
        else {}
    )
    return dict(
        stable_weight=stable_weight,
        canary_service=canary_service,
        canary_weight=weight,
        backend_refs=refs,
        gateway_parent_refs=[parent] if gateway else [],
        ingress_annotations=ingress,
    )


OPENSHIFT_FROM = ["openshift-ingress", "openshift-monitoring", "openshift-user-workload-monitoring"]
KUBERNETES_FROM = ["ingress-nginx", "monitoring"]


def pod_placement(settings: Settings, name: str, selector: dict[str, str]) -> dict[str, Any]:
    """Service account, pull secrets, topology spread and the NetworkPolicy's peers."""
    k = settings.kubernetes
    spread = (
        [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
                "matchLabelKeys": ["pod-template-hash"],
            }
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ]
        if k.topology_spread
        else None
    )
    allowed = (
        k.network_policy_from
        if k.network_policy_from is not None
        else (OPENSHIFT_FROM if k.flavour == "openshift" else KUBERNETES_FROM)
    )
    peers: list[dict[str, Any]] = (
        [
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(allowed)}
                    ]
                }
            }
        ]
        if allowed
        else []
    )
    if k.flavour == "openshift" and k.network_policy_from is None:  # routers on the host network (OpenShift docs)
        peers.append({"namespaceSelector": {"matchLabels": {"policy-group.network.openshift.io/host-network": ""}}})
    return dict(
        service_account=k.service_account or name,
        image_pull_secrets=[{"name": n} for n in k.image_pull_secrets],
        topology_spread=spread,
        network_policy_peers=peers,
    )


ROUTER_TEMPLATES = {"route": "route.yaml.j2", "nginx": "ingress.yaml.j2", "gateway": "httproute.yaml.j2"}


def template_files(settings: Settings) -> list[str]:
    route = ROUTER_TEMPLATES[settings.kubernetes.router]
    k = settings.kubernetes
    files = ["deployment.yaml.j2", "service.yaml.j2", route, "hpa.yaml.j2", "pdb.yaml.j2"]
    files += ["servicemonitor.yaml.j2"] if k.service_monitor else []
    files += ["serviceaccount.yaml.j2"] if k.service_account is None else []
    return files + (["networkpolicy.yaml.j2"] if k.network_policy else [])


def template_env() -> Environment:
    """deploy/openshift/*.yaml.j2 (shipped as mlops_cli/templates/openshift)."""
    templates = resources.files("mlops_cli") / "templates" / "openshift"
    return Environment(
        loader=FileSystemLoader(str(templates)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(
    settings: Settings,
    state: State,
    env: str,
    image: str | None = None,
    allow_tag: bool = False,
    change_cause: str | None = None,
    model_ref: str | None = None,
) -> Rendered:
    """The environment's manifests for the validated model and its image (state's, or `image`).

    With `image` (and optionally `model_ref`) no pipeline state is needed: GitOps renders a digest.
    """
    check_env(env)
    model = model_identity(settings, state, image, model_ref)
    if image is None:
        if model_ref and (state.model is None or state.model.sha256 != model.sha256):
            raise UsageError(
                f"--model {model_ref} is not the model in state, so state's image is not its image",
                hint="give --image REPOSITORY@sha256:DIGEST too",
            )
        image = state.require_image().reference
    image = check_image(image, env, allow_tag or settings.kubernetes.allow_tag)
    cause = change_cause or (
        f"mlops: {model.ref} (sha256:{model.sha256[:12]}) as {image}" if model.ref else f"mlops: {image}"
    )
    values = context(settings, state, env, image, cause, model)
    manifests = [render_template(filename, values) for filename in template_files(settings)]
    return Rendered(
        env=env, namespace=values["namespace"], name=values["name"], image=image, manifests=manifests, values=values
    )


def render_template(filename: str, values: dict[str, Any]) -> dict[str, Any]:
    """One template of deploy/openshift rendered with `values` (context()'s), as an object."""
    text = template_env().get_template(filename).render(**values)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # a template bug, not a user error
        raise RuntimeError(f"template {filename} rendered invalid YAML: {exc}") from exc


def validate(manifests: list[dict[str, Any]], kubernetes_version: str) -> None:
    """Every manifest against the strict schema of its kind; StageFailed naming each problem."""
    try:
        import jsonschema
        from kubernetes_validate import utils as kv
    except ImportError as exc:
        raise ConfigError(
            f"validating manifests needs {exc.name}", hint=f"pip install '{DISTRIBUTION}[kubernetes]'"
        ) from None
    problems = []
    for manifest in manifests:
        what = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        own = OWN_SCHEMAS.get((str(manifest.get("apiVersion")), str(manifest.get("kind"))))
        try:
            if own is not None:
                schema = json.loads((resources.files("mlops_cli") / "schemas" / own).read_text(encoding="utf-8"))
                jsonschema.validate(manifest, schema, cls=jsonschema.Draft202012Validator)
            else:
                kv.validate(manifest, kubernetes_version, strict=True)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
            problems.append(f"{what}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            problems.append(f"{what}: {exc.message}")
        except kv.VersionNotSupportedError as exc:
            raise ConfigError(f"kubernetes.kubernetes_version: {exc.message}") from None
    if problems:
        raise StageFailed(f"{len(problems)} rendered manifest(s) are not valid: " + "; ".join(problems))


def to_yaml(manifest: dict[str, Any] | list[dict[str, Any]]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


class RenderResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    env: str
    namespace: str
    image: str
    flavour: str
    files: list[str]

    def lines(self) -> list[str]:
        return [f"{self.env} ({self.flavour}, namespace {self.namespace}): {self.image}"] + [
            f"  wrote {f}" for f in self.files
        ]


def run(
    settings: Settings,
    env: str | None,
    out: Path,
    image: str | None = None,
    allow_tag: bool = False,
    model_ref: str | None = None,
) -> RenderResult:
    """`mlops render`: validated manifests of env written to out/, one file per object, plus kustomization.yaml."""
    if env is None:
        raise UsageError("--env is required", hint="or --kustomize for a base and an overlay per environment")
    state = State.load(settings.workdir)
    rendered = render(settings, state, env, image=image, allow_tag=allow_tag, model_ref=model_ref)
    validate(rendered.manifests, settings.kubernetes.kubernetes_version)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for index, manifest in enumerate(rendered.manifests, start=1):
        path = out / f"{index:02d}-{manifest['kind'].lower()}.yaml"
        path.write_text(to_yaml(manifest), encoding="utf-8")
        files.append(path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": rendered.namespace,
        "resources": [p.name for p in files],
    }
    (out / "kustomization.yaml").write_text(to_yaml(kustomization), encoding="utf-8")
    return RenderResult(
        env=env,
        namespace=rendered.namespace,
        image=rendered.image,
        flavour=settings.kubernetes.flavour,
        files=[str(p) for p in files + [out / "kustomization.yaml"]],
    )
