"""`mlops notify`: tell people how a release went, composed from the state file.

One call sends one event (started, success, failure, aborted, approval-requested, approved,
rejected) to every configured notifier: a Block Kit message in Slack (fields, a link button to the
build; threaded when a channel and thread are given; Approve/Reject buttons for approval-requested)
and one JSON event on Kafka. What it says comes from state.json (model, digest, the stage that
failed and its one-line reason, the last approval decision) and from the CI build (URL, job,
number, who triggered, who approved). A failed delivery is reported, never raised: telling people
must not change the build's outcome.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .audit import _digest
from .errors import UsageError
from .notifiers import Delivery, Notification, Severity
from .notifiers import notify as deliver
from .notifiers.slack import approval_value
from .settings import Settings
from .stages import STAGES
from .state import State
from .ui import progress

Event = Literal["started", "success", "failure", "aborted", "approval-requested", "approved", "rejected"]
EVENTS: tuple[str, ...] = Event.__args__  # type: ignore[attr-defined]
SEVERITY: dict[str, Severity] = {
    "started": "info",
    "success": "success",
    "failure": "critical",
    "aborted": "warning",
    "approval-requested": "info",
    "approved": "info",
    "rejected": "warning",
}
INPUT_ID = "ReleaseApproval"


@dataclass(frozen=True)
class NotifyRequest:
    event: str
    channel: str | None = None
    thread_ts: str | None = None
    build_url: str | None = None
    job: str | None = None
    build: int | None = None
    triggered_by: str | None = None
    requested_by: str | None = None  # as the requester named themselves (the job's REQUESTED_BY), for the buttons
    approved_by: str | None = None
    stage: str | None = None
    reason: str | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def from_ci(cls, event: str, **given: Any) -> NotifyRequest:
        """Empty strings are not given (Jenkins passes unset parameters as ""); the rest from the CI's env."""
        given = {k: (v.strip() if isinstance(v, str) else v) for k, v in given.items()}
        given = {k: v for k, v in given.items() if v not in (None, "")}
        env = dict(os.environ)
        given.setdefault("build_url", env.get("BUILD_URL") or None)
        given.setdefault("job", env.get("JOB_NAME") or None)
        if "build" not in given and env.get("BUILD_NUMBER", "").isdigit():
            given["build"] = int(env["BUILD_NUMBER"])
        return cls(event=event, environ=env, **given)


class NotifyResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    event: str
    title: str
    fields: dict[str, str]
    deliveries: list[dict[str, Any]]

    def lines(self) -> list[str]:
        if not self.deliveries:
            return [f"{self.title} (no notifier configured: notify.notifiers)"]
        return [self.title] + [
            f"  {'sent to' if d['delivered'] else 'NOT sent to'} {d['notifier']}"
            + (f": {d['error']}" if d.get("error") else "")
            for d in self.deliveries
        ]


def failed_stage(state: State) -> tuple[str | None, str | None]:
    """The stage that failed last and its one-line reason: the last stage to start, if it failed."""
    ran = [
        (rec.started_at, STAGES.index(name) if name in STAGES else -1, name, rec) for name, rec in state.stages.items()
    ]
    if not ran:
        return None, None
    _, _, name, rec = max(ran)
    if rec.status != "failed":
        return None, None
    return name, (rec.message.strip().splitlines() or [""])[0][:300]


def _model(settings: Settings, state: State) -> str:
    """The model this release is about: the one asked for (settings.model, MLOPS_MODEL), pinned once validate-model
    has run for it; a workspace's state may still describe an earlier build's model."""
    requested = settings.model
    tried = state.validation.model_ref if state.validation else None
    if requested:
        return tried if tried and (tried == requested or tried.startswith(requested + "@")) else requested
    return tried or (state.model.ref if state.model else None) or "the model"


def compose(settings: Settings, req: NotifyRequest) -> Notification:
    if req.event not in EVENTS:
        raise UsageError(f"unknown event {req.event!r}; known: {', '.join(EVENTS)}")
    state = State.load(settings.workdir)
    model = _model(settings, state)
    current = state.model is not None and state.model.ref == model
    digest = _digest(state) if current and state.bundle is not None else None
    last_approval = state.approvals[-1] if state.approvals else None
    approved_by = req.approved_by or (
        last_approval.by
        if last_approval and last_approval.decision == "approved" and req.event in ("approved", "success")
        else None
    )
    stage, reason = (req.stage, req.reason) if req.stage else (None, req.reason)
    if req.event == "failure" and stage is None:
        stage, found = failed_stage(state)
        reason = reason or found or "it failed outside the mlops stages: see the build log"
    if req.event == "aborted" and not reason and last_approval and last_approval.decision == "timed-out":
        reason = "nobody approved in time: not deployed"
    where = f"build #{req.build}" if req.build is not None else "the build"
    titles = {
        "started": f"Release of {model} started",
        "success": f"{model} released to production",
        "failure": f"Release of {model} failed" + (f" at {stage}" if stage else ""),
        "aborted": f"Release of {model} aborted: not deployed",
        "approval-requested": f"Approval needed: {model} to production",
        "approved": f"{model} approved for production" + (f" by {approved_by}" if approved_by else ""),
        "rejected": f"Release of {model} rejected"
        + (f" by {req.approved_by}" if req.approved_by else "")
        + ": not deployed",
    }
    fields = {"model": model}
    if digest:
        fields["digest"] = digest
    if stage:
        fields["failed stage"] = stage
    if req.triggered_by:
        fields["triggered by"] = req.triggered_by
    if approved_by:
        fields["approved by"] = approved_by
    if req.event == "rejected" and req.approved_by:
        fields["rejected by"] = req.approved_by
    if req.event == "success" and state.deployments.get("prod") is not None:
        fields["serving at"] = state.deployments["prod"].url
    if req.event == "approval-requested" and state.smoke is not None and state.smoke.passed:
        fields["smoke test"] = f"passed, p95 {state.smoke.p95_ms:g} ms"
    approval = None
    if req.event == "approval-requested":
        if not (req.job and req.build is not None and req.build_url):
            raise UsageError(
                "approval-requested needs the job, build number and build URL",
                hint="run it in Jenkins (JOB_NAME, BUILD_NUMBER, BUILD_URL) or pass --job, --build, --build-url",
            )
        approval = approval_value(
            req.job, req.build, req.build_url, INPUT_ID, req.requested_by or req.triggered_by, model, digest
        )
    event = {
        "event": req.event,
        "model": model,
        "digest": digest,
        "failed_stage": stage,
        "reason": reason,
        "build_url": req.build_url,
        "job": req.job,
        "build": req.build,
        "triggered_by": req.triggered_by,
        "approved_by": approved_by if req.event != "rejected" else None,
        "rejected_by": req.approved_by if req.event == "rejected" else None,
    }
    return Notification(
        title=titles[req.event],
        text=reason or "",
        severity=SEVERITY[req.event],
        kind="release",
        fields=fields,
        link=req.build_url,
        button=f"Open {where}" if req.build_url else None,
        channel=req.channel,
        thread_ts=req.thread_ts,
        approval=approval,
        event={k: v for k, v in event.items() if v is not None},
    )


def run(settings: Settings, req: NotifyRequest) -> NotifyResult:
    note = compose(settings, req)
    if req.channel and "slack" not in settings.notify.notifiers:
        # asked to answer in a Slack channel (the chatops trigger): Slack is a notifier for this call
        settings = settings.model_copy(
            update={"notify": settings.notify.model_copy(update={"notifiers": [*settings.notify.notifiers, "slack"]})}
        )
    deliveries: list[Delivery] = deliver(settings, note)
    for d in deliveries:
        if not d.delivered:
            progress(f"warning: could not notify {d.notifier}: {d.error}")
    return NotifyResult(
        event=req.event,
        title=note.title,
        fields=dict(note.fields),
        deliveries=[
            {"notifier": d.notifier, "delivered": d.delivered, "attempts": d.attempts, "error": d.error}
            for d in deliveries
        ],
    )
