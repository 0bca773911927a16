"""`status` and `models` as Slack text: what serves where (from the workdir's state and the chatops audit
log, which knows who asked), and the latest validated model versions in the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MlopsError
from ..state import State

if TYPE_CHECKING:
    from ..settings import Settings


def _asked(audit: list[dict[str, Any]], env: str, model_ref: str) -> str:
    asked = next(
        (
            a
            for a in reversed(audit)
            if a.get("event") == "released"
            and a.get("env") == env
            and a.get("model") in (model_ref, model_ref.rsplit("@", 1)[0])
        ),
        None,
    )
    return f", requested by <@{asked['user']}>" if asked else ""


def cluster_status_text(settings: Settings, env: str | None, audit: list[dict[str, Any]]) -> str:
    """What the cluster runs: the Deployment `kubernetes.name` in each environment's namespace, as the
    kubernetes target annotates it (model ref, version, sha256, image by digest)."""
    from ..targets.kubeapi import Kube, NotFound

    kube = Kube(settings.kubernetes)
    name = settings.kubernetes.name
    if not name:  # (chatops shows the cluster only when kubernetes.name is set)
        return "kubernetes.name is not set: no Deployment to look at"
    lines = []
    for env_name in [env] if env else ["test", "prod"]:
        namespace = getattr(settings.kubernetes.namespaces, env_name)
        try:
            dep = kube.get("Deployment", namespace, name)
        except NotFound:
            lines.append(f"*{env_name}*: no Deployment {name} in {namespace}")
            continue
        notes = (dep.get("metadata") or {}).get("annotations") or {}
        template = ((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}
        notes = {**notes, **(template.get("annotations") or {})}
        ref = notes.get("mlops.io/model-ref", "unknown model")
        ready = (dep.get("status") or {}).get("availableReplicas") or 0
        since = next(
            (
                c.get("lastUpdateTime")
                for c in (dep.get("status") or {}).get("conditions") or []
                if c.get("type") == "Progressing"
            ),
            None,
        ) or (dep.get("metadata") or {}).get("creationTimestamp")
        lines.append(
            f"*{env_name}*: `{ref}` ({notes.get('mlops.io/model-name', '?')} version "
            f"{notes.get('mlops.io/model-version', '?')}) since {since}{_asked(audit, env_name, ref)}, digest "
            f"`{notes.get('mlops.io/image', '?')}`, {ready} pods available in {namespace}"
        )
    return "\n".join(lines)


def status_text(workdir: Path, env: str | None, audit: list[dict[str, Any]]) -> str:
    state = State.load(workdir)
    lines = []
    for name in [env] if env else ["test", "prod"]:
        dep = state.deployments.get(name)
        if dep is None:
            lines.append(f"*{name}*: nothing deployed")
            continue
        record = next((a for a in reversed(state.audit) if a.env == name and a.model_ref == dep.model_ref), None)
        digest = record.digest if record else (dep.image or f"bundle sha256:{dep.bundle_digest}")
        by = _asked(audit, name, dep.model_ref)
        lines.append(
            f"*{name}*: `{dep.model_ref}` ({dep.model_name} version {dep.model_version}) since {dep.at}"
            f"{by}, digest `{digest}`, at {dep.url}"
        )
    return "\n".join(lines)


def models_text(settings: Settings, name: str | None, limit: int = 20) -> str:
    """The newest validated version of each model (or of NAME) in the local store; the ClearML source lists
    the models carrying the passed-verdict tag."""
    source = settings.chatops.models_source
    if source == "clearml":
        from ..sources import get_source

        tag = settings.validation.verdict_tags.get("passed") or "mlops:validated"
        try:
            refs = get_source("clearml", settings).tagged(tag)
        except MlopsError as exc:
            return f"cannot list the ClearML models: {exc}"
        shown = [str(r) for r in refs if name is None or name in str(r)][:limit]
        return "\n".join(f"• `{r}`" for r in shown) or f"no ClearML model is tagged {tag!r}"
    from ..sources.local import LocalStore

    store = LocalStore(settings.store_path)
    validated = settings.validation.validator_tag
    names = [name] if name else store.names()
    lines = []
    for model in names[:limit]:
        for version in reversed(store.versions(model)):
            try:
                meta = store.metadata(_ref(model, version))
            except MlopsError:
                continue
            if validated and validated not in meta.tags:
                continue
            metrics = ", ".join(f"{k} {v:g}" for k, v in sorted(meta.metrics.items()))
            lines.append(
                f"• `local:{model}@{version}` {meta.framework}, {metrics or 'no metrics'}, sha256 {meta.sha256[:12]}"
            )
            break
    if not lines:
        return f"no validated version of {name!r}" if name else "no validated model in the store"
    return "\n".join(lines)


def _ref(name: str, version: str):
    from ..sources import ModelRef

    return ModelRef("local", name, version)
