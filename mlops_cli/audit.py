"""The audit trail: which model runs where, built from what, since when.

After deploy-test and rolling-update succeed, `record_deployment` tags the model in its source
(`deployed:test`, `deployed:prod`, from `audit.deployed_tags`), records the deployed digest, the
environment and the time in the model's metadata (`mlops.deployed.<env>.*`), takes the tag off the
model that ran there before, and appends the same to the state file's `audit` list, which
`mlops status` shows. Sources that keep no such record (the local store, S3) leave the state file
as the record. A source that cannot be reached does not undo a deployment that succeeded: the
failure is shown and kept in state.
"""

from __future__ import annotations

from typing import Optional

from .config import Settings
from .errors import MlopsError
from .sources import ModelRef, ModelSource, get_source, parse_ref
from .state import AuditRecord, State, now
from .ui import progress

HISTORY = 50  # audit entries kept in state.json


def _digest(state: State) -> str:
    if state.image is not None:
        return state.image.reference
    return f"bundle sha256:{state.bundle.bundle_digest}" if state.bundle else "unknown"


def record_deployment(settings: Settings, env: str) -> Optional[AuditRecord]:
    """Record that the current deployment of env succeeded; never raises for the source's failures."""
    state = State.load(settings.workdir)
    dep = state.deployments.get(env)
    if dep is None:
        return None
    tag = settings.audit.deployed_tags.get(env) or None
    record = AuditRecord(env=env, model_ref=dep.model_ref, model_sha256=dep.model_sha256, digest=_digest(state),
                         target=dep.target, tag=tag, at=now())
    before = next((a for a in reversed(state.audit) if a.env == env and a.model_ref != dep.model_ref), None)
    ref = parse_ref(dep.model_ref)
    try:
        source = get_source(ref.scheme, settings)
        metadata = {f"mlops.deployed.{env}.digest": record.digest, f"mlops.deployed.{env}.at": record.at,
                    f"mlops.deployed.{env}.model_sha256": dep.model_sha256,
                    f"mlops.deployed.{env}.target": dep.target, f"mlops.deployed.{env}.url": dep.url}
        record.written_back = source.write_back(ref, add_tags=[tag] if tag else [], remove_tags=[], metadata=metadata)
        record.detail = (f"tag {tag!r} and metadata written to {ref}" if record.written_back
                         else f"recorded in state (the {ref.scheme} source keeps no tags)")
        if tag and record.written_back:
            _take_tag_off_others(settings, state, source, env, ref, tag, before, record.at)
    except MlopsError as exc:
        record.detail = f"not written to {ref}: {exc}"
        progress(f"warning: the audit trail of {ref} was not written back: {exc}")
    state = State.load(settings.workdir)  # the write-back took time: keep what others saved meanwhile
    state.audit = (state.audit + [record])[-HISTORY:]
    state.save(settings.workdir)
    return record


def _take_tag_off_others(settings: Settings, state: State, source: ModelSource, env: str, ref: ModelRef, tag: str,
                         before: Optional[AuditRecord], at: str) -> None:
    """Every other model carrying the tag loses it: the one this workdir deployed before, and (where the source
    can search by tag, as ClearML can) any other, e.g. deployed from another workdir or whose write-back failed."""
    holders: list[ModelRef] = []
    if before is not None and parse_ref(before.model_ref).scheme == ref.scheme:
        holders.append(parse_ref(before.model_ref))
    try:
        holders += [h for h in source.tagged(tag) if h not in holders]
    except MlopsError as exc:
        progress(f"warning: could not look up other models tagged {tag!r}: {exc}")
    for old in holders:
        if old == ref or _still_deployed(settings, state, env, str(old), tag):
            continue
        try:
            source.write_back(old, add_tags=[], remove_tags=[tag], metadata={f"mlops.deployed.{env}.until": at})
        except MlopsError as exc:
            progress(f"warning: could not take the tag {tag!r} off {old}: {exc}")


def _still_deployed(settings: Settings, state: State, env: str, model_ref: str, tag: str) -> bool:
    """Another environment sharing the same tag name still runs the old model."""
    return any(d.model_ref == model_ref and name != env and settings.audit.deployed_tags.get(name) == tag
               for name, d in state.deployments.items())


def history(state: State, env: Optional[str] = None) -> list[AuditRecord]:
    return [a for a in state.audit if env is None or a.env == env]
