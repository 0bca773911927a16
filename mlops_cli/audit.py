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

import os
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict

from .errors import MlopsError
from .settings import Settings
from .sources import ModelRef, ModelSource, get_source, parse_ref
from .state import ApprovalRecord, AuditRecord, State, now
from .ui import progress

HISTORY = 50  # audit entries kept in state.json


@dataclass(frozen=True)
class Who:
    """Who asked for a deployment and who approved it, and the CI build that did it (all optional)."""

    triggered_by: str | None = None
    approved_by: str | None = None
    build_url: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}


def record_approval(settings: Settings, decision: str, by: str | None, who: Who) -> ApprovalRecord:
    """The approval gate's decision, kept in state (`approvals`) whatever it was: a rejection or a timeout
    is recorded as such, with the model and digest that were not deployed."""
    state = State.load(settings.workdir)
    record = ApprovalRecord(
        decision=decision,
        by=by or None,
        triggered_by=who.triggered_by,
        model_ref=state.model.ref if state.model else None,
        digest=_digest(state) if state.bundle else None,
        build_url=who.build_url,
    )
    state.approvals = (state.approvals + [record])[-HISTORY:]
    state.save(settings.workdir)
    return record


def _digest(state: State) -> str:
    if state.image is not None:
        return state.image.reference
    return f"bundle sha256:{state.bundle.bundle_digest}" if state.bundle else "unknown"


def record_deployment(settings: Settings, env: str, who: Who | None = None) -> AuditRecord | None:
    """Record that the current deployment of env succeeded; never raises for the source's failures."""
    state = State.load(settings.workdir)
    dep = state.deployments.get(env)
    if dep is None:
        return None
    who = who or Who()
    tag = settings.audit.deployed_tags.get(env) or None
    record = AuditRecord(
        env=env,
        model_ref=dep.model_ref,
        model_sha256=dep.model_sha256,
        digest=_digest(state),
        target=dep.target,
        tag=tag,
        at=now(),
        triggered_by=who.triggered_by,
        approved_by=who.approved_by,
        build_url=who.build_url,
    )
    before = next((a for a in reversed(state.audit) if a.env == env and a.model_ref != dep.model_ref), None)
    ref = parse_ref(dep.model_ref)
    try:
        source = get_source(ref.scheme, settings)
        metadata = {
            f"mlops.deployed.{env}.digest": record.digest,
            f"mlops.deployed.{env}.at": record.at,
            f"mlops.deployed.{env}.model_sha256": dep.model_sha256,
            f"mlops.deployed.{env}.target": dep.target,
            f"mlops.deployed.{env}.url": dep.url,
        }
        metadata.update({f"mlops.deployed.{env}.{key}": value for key, value in who.as_dict().items()})
        record.written_back = source.write_back(ref, add_tags=[tag] if tag else [], remove_tags=[], metadata=metadata)
        record.detail = (
            f"tag {tag!r} and metadata written to {ref}"
            if record.written_back
            else f"recorded in state (the {ref.scheme} source keeps no tags)"
        )
        if tag and record.written_back:
            _take_tag_off_others(settings, state, source, env, ref, tag, before, record.at)
    except MlopsError as exc:
        record.detail = f"not written to {ref}: {exc}"
        progress(f"warning: the audit trail of {ref} was not written back: {exc}")
    state = State.load(settings.workdir)  # the write-back took time: keep what others saved meanwhile
    state.audit = (state.audit + [record])[-HISTORY:]
    state.save(settings.workdir)
    return record


def _take_tag_off_others(
    settings: Settings,
    state: State,
    source: ModelSource,
    env: str,
    ref: ModelRef,
    tag: str,
    before: AuditRecord | None,
    at: str,
) -> None:
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
    return any(
        d.model_ref == model_ref and name != env and settings.audit.deployed_tags.get(name) == tag
        for name, d in state.deployments.items()
    )


class ApprovalResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    record: ApprovalRecord

    def lines(self) -> list[str]:
        r = self.record
        return [
            f"approval {r.decision}"
            + (f" by {r.by}" if r.by else "")
            + f" for {r.model_ref or 'the model'}"
            + (f" ({r.digest})" if r.digest else "")
            + ("" if r.decision == "approved" else ": not deployed")
        ]


def record_approval_result(
    settings: Settings, decision: str, by: str | None, triggered_by: str | None
) -> ApprovalResult:
    who = Who(triggered_by=triggered_by or None, build_url=os.environ.get("BUILD_URL") or None)
    return ApprovalResult(record=record_approval(settings, decision, (by or "").strip() or None, who))


def history(state: State, env: str | None = None) -> list[AuditRecord]:
    return [a for a in state.audit if env is None or a.env == env]
