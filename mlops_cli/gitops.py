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
from pathlib import Path
from typing import Any, Optional

from .config import Settings
from .errors import UsageError
from .render import ENVS, Rendered, RenderResult, render, to_yaml, validate
from .state import State

KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}


def _pointer(path: list[str]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def json_patch(base: Any, target: Any, path: Optional[list[str]] = None) -> list[dict[str, Any]]:
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
                patches.append({"path": written[-1].name,
                                "target": {"kind": manifest["kind"], "name": manifest["metadata"]["name"]}})
        kustomization = {**KUSTOMIZATION, "namespace": result.namespace, "resources": ["../../base"]}
        if patches:
            kustomization["patches"] = patches
        written.append(overlay / "kustomization.yaml")
        written[-1].write_text(to_yaml(kustomization), encoding="utf-8")
    return written


def run(settings: Settings, out: Path, image: Optional[str] = None, allow_tag: bool = False,
        model_ref: Optional[str] = None) -> RenderResult:
    """Render and validate every environment, then write the base and the overlays to out/."""
    state = State.load(settings.workdir)
    rendered = {env: render(settings, state, env, image=image, allow_tag=allow_tag, model_ref=model_ref)
                for env in ENVS}
    for result in rendered.values():
        validate(result.manifests, settings.kubernetes.kubernetes_version)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    files = write(rendered, out)
    first = rendered["prod"]
    return RenderResult(env="+".join(ENVS), namespace=",".join(r.namespace for r in rendered.values()),
                        image=first.image, flavour=settings.kubernetes.flavour, files=[str(p) for p in files])
