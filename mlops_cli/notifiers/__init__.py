"""Notifiers: where rollout outcomes and relayed alerts go, one module per backend.

A notifier turns a `Notification` into one delivery (a Slack message, a Kafka event, ...).
`send` raises `DeliveryError`, whose `retryable` flag separates a sink that is briefly down
(connection refused, 429, 5xx) from one that will never accept the message (bad URL, 4xx), and
whose `sink_down` flag marks a refusal of every message (a revoked Slack webhook, an archived
channel, a Kafka topic the credentials may not write): not this message's fault, so the relay
keeps it queued and reports the sink down rather than dead-lettering everything.
`notify` is what stages call: it delivers to every configured notifier with bounded retries
and never fails the stage; an undelivered outcome is reported back, not raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..backends import load
from ..errors import MlopsError
from ..retry import call_with_retries

if TYPE_CHECKING:
    from ..settings import Settings

NOTIFIERS = {
    "slack": "mlops_cli.notifiers.slack:SlackNotifier",
    "kafka": "mlops_cli.notifiers.kafka:KafkaNotifier",
}

Severity = Literal["info", "success", "warning", "critical"]


@dataclass(frozen=True)
class Notification:
    """One thing worth telling people, in a shape every backend can render."""

    title: str
    """One line, e.g. "rolling-update of iris@3 to prod succeeded"."""
    text: str = ""
    """Details in plain text (backends escape it for their own markup)."""
    severity: Severity = "info"
    kind: str = "event"
    """What produced it: `rollout`, `rollback`, `alert`, ..."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """Short key/value facts shown side by side (model, version, digest, environment)."""
    link: str | None = None
    """Where to look next (a runbook, a dashboard, a Jenkins build)."""
    event: Mapping[str, Any] = field(default_factory=dict)
    """Machine-readable payload for sinks that other programs read (Kafka, webhooks)."""
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    button: str | None = None
    """Label of a link button to `link` (e.g. "Open build #12"); none: the link is in the footer line only."""
    channel: str | None = None
    """Where a chat notifier that can choose posts it (Slack with a bot token); none: its configured channel."""
    thread_ts: str | None = None
    """The Slack thread to reply in (the `ts` of its first message); none: a new message."""
    approval: Mapping[str, Any] | None = None
    """An approval request (job, build, build_url, input_id, requested_by, model, digest): Slack adds
    Approve/Reject buttons carrying it (notifiers.slack.approval_blocks)."""

    def as_event(self) -> dict[str, Any]:
        """The JSON-able form: every field, `fields` and `event` as plain dicts."""
        data = asdict(self)
        data["fields"] = dict(self.fields)
        data["event"] = dict(self.event)
        data["approval"] = dict(self.approval) if self.approval is not None else None
        return data


class DeliveryError(MlopsError):
    """A notification that did not arrive; `retryable` when trying again may help."""

    def __init__(self, message: str, *, retryable: bool, hint: str | None = None, sink_down: bool = False):
        super().__init__(message, hint=hint)
        self.retryable = retryable
        self.sink_down = sink_down


class Notifier(Protocol):
    name: str

    def send(self, note: Notification) -> None:
        """Deliver once; raise DeliveryError (never with a secret in its message) when not delivered."""

    # optional: close() -> None, releasing connections (the relay calls it at shutdown)


def get_notifier(name: str, settings: Settings) -> Notifier:
    return load("notifier", name, NOTIFIERS)(settings)


@dataclass(frozen=True)
class Delivery:
    notifier: str
    delivered: bool
    attempts: int
    error: str | None = None


def send_with_retries(
    notifier: Notifier,
    note: Notification,
    *,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Send, retrying a retryable failure up to `retries` times with backoff and jitter (mlops_cli.retry)."""
    attempts = []

    def once() -> None:
        attempts.append(1)
        notifier.send(note)

    try:
        call_with_retries(
            once,
            retries=retries,
            backoff_s=backoff_s,
            retry_on=(DeliveryError,),
            retryable=lambda exc: getattr(exc, "retryable", False),
            sleep=sleep,
        )
    except DeliveryError as exc:
        return Delivery(notifier.name, False, len(attempts), str(exc))
    return Delivery(notifier.name, True, len(attempts))


def notify(settings: Settings, note: Notification, sleep: Callable[[float], None] = time.sleep) -> list[Delivery]:
    """Deliver `note` to every notifier in `notify.notifiers`; failures come back, never raise.

    A misconfigured notifier (unknown name, missing webhook URL) is reported the same way:
    telling people about a rollout must not turn a good rollout into a failed stage.
    """
    results = []
    for name in settings.notify.notifiers:
        try:
            notifier = get_notifier(name, settings)
        except MlopsError as exc:
            results.append(Delivery(name, False, 0, str(exc)))
            continue
        results.append(
            send_with_retries(
                notifier, note, retries=settings.notify.retries, backoff_s=settings.notify.retry_backoff_s, sleep=sleep
            )
        )
    return results
