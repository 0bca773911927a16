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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict

from .config import Settings
from .errors import ConfigError, StageFailed, UsageError
from .state import State
from .ui import progress

ENVS = ("test", "prod")
DIGEST_REF = re.compile(r"^(?P<repo>[a-z0-9]+(?:[._/:-][a-z0-9]+)*)@sha256:[0-9a-f]{64}$")
TAG_REF = re.compile(r"^(?P<repo>[a-z0-9]+(?:[._/:-][a-z0-9]+)*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ANNOTATION = "mlops.io/"
CHANGE_CAUSE = "kubernetes.io/change-cause"
OWN_SCHEMAS = {("route.openshift.io/v1", "Route"): "route.openshift.io-v1-route.json",
               ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com-v1-servicemonitor.json"}


@dataclass(frozen=True)
class Rendered:
    env: str
    namespace: str
    name: str
    image: str
    manifests: list[dict[str, Any]]

    def get(self, kind: str) -> Optional[dict[str, Any]]:
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
            raise ConfigError(f"kubernetes.name {name!r} is not a DNS label (lower-case letters, digits and '-', "
                              "at most 63, starting and ending alphanumeric)")
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
        raise UsageError(f"{image} is a moving tag: production takes an image pinned by digest",
                         hint="give REPOSITORY@sha256:DIGEST, or --allow-tag to accept the tag anyway")
    progress(f"warning: {image} is a moving tag; what runs may change under the same name")
    return image


def _label(value: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63].strip("-_.")
    return value if LABEL_VALUE.match(value) else ""


def drain_seconds(settings: Settings, state: State) -> float:
    """How long the image's server drains after SIGTERM: the bundle's spec.json, else assemble.drain_seconds."""
    if state.bundle is not None:
        try:
            spec = json.loads((Path(state.bundle.path) / "spec.json").read_text(encoding="utf-8"))
            return float(spec["server"]["drain_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
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
        raise ConfigError(f"kubernetes.termination_grace_s ({k.termination_grace_s}) must be longer than "
                          f"kubernetes.prestop_sleep_s ({k.prestop_sleep_s}) plus the server's drain ({drain:g} s): "
                          "in-flight requests would be killed",
                          hint=f"set kubernetes.termination_grace_s to at least {math.floor(needed) + 10}")


# The server's memory under its own bounds (docs/bundle.md, "Limits"; figures: bench/memory.py):
# baseline (runtime + model) + max_batch_bytes x 25 (the batch being decoded and scored)
# + max_inflight_bytes x 4 (bodies admitted, their answers) + a margin.
RUNTIME_BASELINE_MIB = 150
BATCH_MULTIPLIER, INFLIGHT_MULTIPLIER, MARGIN_MIB = 25, 4, 64
_SERVER_DEFAULTS = {"max_batch_bytes": 1_048_576, "max_inflight_bytes": 8_388_608}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9,
          "T": 10**12}


def quantity_bytes(value: str) -> Optional[float]:
    """A Kubernetes memory quantity in bytes ("512Mi", "1G", "268435456"); None if not of those forms."""
    match = _QUANTITY.match(str(value).strip())
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


def memory_needed_mib(settings: Settings, state: State) -> float:
    """What the server needs under its bounds: the formula above with the bundle's spec.json
    (else the runtime's defaults) and the model artifact's size added to the baseline."""
    server, artifact = dict(_SERVER_DEFAULTS), 0
    if state.bundle is not None:
        try:
            spec = json.loads((Path(state.bundle.path) / "spec.json").read_text(encoding="utf-8"))
            given = spec.get("server", {})
            server.update({k: int(given[k]) for k in _SERVER_DEFAULTS if k in given})
            if "max_inflight_bytes" not in given:  # the runtime's default holds at least one body
                server["max_inflight_bytes"] = max(server["max_inflight_bytes"], int(given.get("max_body_bytes", 0)))
            artifact = (Path(state.bundle.path) / spec["model"]["artifact"]).stat().st_size
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    mib = 1 << 20
    return (RUNTIME_BASELINE_MIB + artifact / mib + server["max_batch_bytes"] * BATCH_MULTIPLIER / mib
            + server["max_inflight_bytes"] * INFLIGHT_MULTIPLIER / mib + MARGIN_MIB)


def check_memory(settings: Settings, state: State) -> None:
    """A memory limit below what the server's own bounds let it use gets it OOM-killed under load."""
    limit = quantity_bytes(settings.kubernetes.resources.memory_limit)
    needed = memory_needed_mib(settings, state)
    if limit is not None and limit < needed * (1 << 20):
        raise ConfigError(f"kubernetes.resources.memory_limit ({settings.kubernetes.resources.memory_limit}) is below "
                          f"the {math.ceil(needed)}Mi the server may use under its bounds (baseline + "
                          "max_batch_bytes x 25 + max_inflight_bytes x 4 + margin, docs/bundle.md): it would be "
                          "OOM-killed under load",
                          hint=f"raise memory_limit to {math.ceil(needed / 64) * 64}Mi or lower the bundle's "
                               "server.max_inflight_bytes")


def context(settings: Settings, state: State, env: str, image: str, change_cause: str) -> dict[str, Any]:
    k = settings.kubernetes
    check_grace(settings, state)
    check_memory(settings, state)
    model, _ = state.require_validated()
    name = app_name(settings, model.name)
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
    labels = {**selector, "app.kubernetes.io/managed-by": "mlops", "app.kubernetes.io/part-of": "mlops"}
    if _label(model.version):
        labels["app.kubernetes.io/version"] = _label(model.version)
    model_annotations = {ANNOTATION + "model-name": model.name, ANNOTATION + "model-version": model.version,
                         ANNOTATION + "model-sha256": model.sha256, ANNOTATION + "model-ref": model.ref,
                         ANNOTATION + "image": image}
    host = k.hosts.get(env)
    if k.flavour == "kubernetes" and k.tls_secret and not host:
        raise ConfigError(f"kubernetes.tls_secret needs a host for {env}", hint=f"set kubernetes.hosts.{env}")
    return dict(
        name=name, namespace=getattr(k.namespaces, env), labels=labels, selector=selector, image=image,
        # a tag may point elsewhere than a node's cached copy of it: pull it each time; a digest cannot move
        image_pull_policy="IfNotPresent" if DIGEST_REF.match(image) else "Always",
        annotations={**model_annotations, CHANGE_CAUSE: change_cause}, pod_annotations=model_annotations,
        replicas=max(k.replicas, k.min_replicas), port=k.port, resources=k.resources.model_dump(),
        command=["python", "-m", "serving", "/app", "--host", "0.0.0.0", "--port", str(k.port)],
        startup_failures=max(1, math.ceil(k.startup_timeout_s / 5)), termination_grace_s=k.termination_grace_s,
        prestop_sleep_s=k.prestop_sleep_s, progress_deadline_s=k.progress_deadline_s,
        min_replicas=k.min_replicas, max_replicas=k.max_replicas, cpu_target_percent=k.cpu_target_percent,
        custom_metric=k.custom_metric.model_dump() if k.custom_metric else None,
        host=host, ingress_class=k.ingress_class, tls_secret=k.tls_secret,
    )


def template_files(settings: Settings) -> list[str]:
    route = "route.yaml.j2" if settings.kubernetes.flavour == "openshift" else "ingress.yaml.j2"
    files = ["deployment.yaml.j2", "service.yaml.j2", route, "hpa.yaml.j2", "pdb.yaml.j2"]
    return files + (["servicemonitor.yaml.j2"] if settings.kubernetes.service_monitor else [])


def render(settings: Settings, state: State, env: str, image: Optional[str] = None, allow_tag: bool = False,
           change_cause: Optional[str] = None) -> Rendered:
    """The environment's manifests for the validated model and its image (state's, or `image`)."""
    check_env(env)
    model, _ = state.require_validated()
    if image is None:
        image = state.require_image().reference
    image = check_image(image, env, allow_tag or settings.kubernetes.allow_tag)
    cause = change_cause or f"mlops: {model.ref} (sha256:{model.sha256[:12]}) as {image}"
    values = context(settings, state, env, image, cause)
    templates = resources.files("mlops_cli") / "templates" / "openshift"
    jinja = Environment(loader=FileSystemLoader(str(templates)), undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                        keep_trailing_newline=True, autoescape=False)
    manifests = []
    for filename in template_files(settings):
        text = jinja.get_template(filename).render(**values)
        try:
            manifests.append(yaml.safe_load(text))
        except yaml.YAMLError as exc:  # a template bug, not a user error
            raise RuntimeError(f"template {filename} rendered invalid YAML: {exc}") from exc
    return Rendered(env=env, namespace=values["namespace"], name=values["name"], image=image, manifests=manifests)


def validate(manifests: list[dict[str, Any]], kubernetes_version: str) -> None:
    """Every manifest against the strict schema of its kind; StageFailed naming each problem."""
    try:
        import jsonschema
        from kubernetes_validate import utils as kv
    except ImportError as exc:
        raise ConfigError(f"validating manifests needs {exc.name}", hint="pip install 'mlops[kubernetes]'") from None
    problems = []
    for manifest in manifests:
        what = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        own = OWN_SCHEMAS.get((manifest.get("apiVersion"), manifest.get("kind")))
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


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


class RenderResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    env: str
    namespace: str
    image: str
    flavour: str
    files: list[str]

    def lines(self) -> list[str]:
        return [f"{self.env} ({self.flavour}, namespace {self.namespace}): {self.image}"] + \
               [f"  wrote {f}" for f in self.files]


def run(settings: Settings, env: str, out: Path, image: Optional[str] = None, allow_tag: bool = False) -> RenderResult:
    """`mlops render`: validated manifests of env written to out/, one file per object, plus kustomization.yaml."""
    state = State.load(settings.workdir)
    rendered = render(settings, state, env, image=image, allow_tag=allow_tag)
    validate(rendered.manifests, settings.kubernetes.kubernetes_version)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for index, manifest in enumerate(rendered.manifests, start=1):
        path = out / f"{index:02d}-{manifest['kind'].lower()}.yaml"
        path.write_text(to_yaml(manifest), encoding="utf-8")
        files.append(path)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "namespace": rendered.namespace, "resources": [p.name for p in files]}
    (out / "kustomization.yaml").write_text(to_yaml(kustomization), encoding="utf-8")
    return RenderResult(env=env, namespace=rendered.namespace, image=rendered.image,
                        flavour=settings.kubernetes.flavour, files=[str(p) for p in files + [out / "kustomization.yaml"]])
