"""Rollout outcomes as notifications: what rolling-update and rollback tell people (notifiers/)."""

from __future__ import annotations

import os

from .notifiers import Delivery, Notification, Severity, notify
from .settings import Settings
from .state import RolloutRecord, State
from .ui import progress

SEVERITY: dict[str, Severity] = {"succeeded": "success", "rolled-back": "warning", "failed": "critical"}
TITLE = {
    "succeeded": "{action} of {model} to {env} succeeded",
    "rolled-back": "{action} of {model} to {env} failed and was rolled back",
    "failed": "{action} of {model} to {env} failed",
}


def note_for(state: State, action: str, record: RolloutRecord) -> Notification:
    model = f"{state.model.name}@{state.model.version}" if state.model else "the model"
    if action == "rollback":
        title = (
            f"{record.env} rolled back to revision {record.to_revision}"
            if record.outcome == "succeeded"
            else f"rollback of {record.env} failed"
        )
    else:
        title = TITLE[record.outcome].format(action=action, model=model, env=record.env)
    fields = {"environment": record.env, "outcome": record.outcome}
    if state.model is not None:
        fields.update(model=state.model.ref, sha256=state.model.sha256[:12])
    for key in ("from_revision", "to_revision", "failed_revision", "image", "previous_image"):
        value = getattr(record, key)
        if value is not None:
            fields[key.replace("_", " ")] = str(value)
    return Notification(
        title=title,
        text=record.message,
        severity=SEVERITY[record.outcome],
        kind=action,
        fields=fields,
        link=os.environ.get("BUILD_URL") or None,
        event={"action": action, **record.model_dump(mode="json")},
    )


def announce(settings: Settings, state: State, action: str, record: RolloutRecord) -> list[Delivery]:
    """Send the outcome to every configured notifier; a failed delivery is shown, never raised."""
    deliveries = notify(settings, note_for(state, action, record))
    for delivery in deliveries:
        if delivery.delivered:
            progress(f"notified {delivery.notifier}")
        else:
            progress(f"warning: could not notify {delivery.notifier}: {delivery.error}")
    return deliveries
