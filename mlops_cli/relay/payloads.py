"""Alertmanager and Grafana webhook bodies, checked, and turned into one Notification per alert.

Alertmanager's webhook (version "4": https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)
and Grafana's webhook contact point (the same shape plus `orgId`, `title`, `state`, `message`, and
per alert `values`, `dashboardURL`, `panelURL`, `silenceURL`) share what matters here: a group
`status` and a non-empty list of `alerts`, each with a `status`, string `labels` and `annotations`,
`startsAt`/`endsAt` and a `fingerprint`. Anything else in the body is kept in the Kafka event as sent.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..notifiers import Notification, Severity

SEVERITIES: dict[str, Severity] = {
    "critical": "critical",
    "error": "critical",
    "page": "critical",
    "warning": "warning",
    "info": "info",
    "none": "info",
}
FIELDS = ("namespace", "job", "feature", "pod", "reason", "instance")


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None
    dashboardURL: str | None = None  # Grafana


class Webhook(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    alerts: list[Alert] = Field(min_length=1)
    receiver: str | None = None
    groupKey: str | None = None
    externalURL: str | None = None
    version: str | None = None


class MalformedPayload(ValueError):
    """The body is not an alert webhook; the message says why, in one line."""


def parse(body: Any) -> Webhook:
    try:
        return Webhook.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        more = len(exc.errors()) - 1
        raise MalformedPayload(f"{where}: {err['msg']}" + (f" (and {more} more)" if more else "")) from None


def _link(alert: Alert, runbook_base_url: str | None) -> str | None:
    runbook = alert.annotations.get("runbook_url")
    if runbook and runbook.startswith(("http://", "https://")):
        return runbook
    if runbook and runbook_base_url:
        return urljoin(runbook_base_url.rstrip("/") + "/", runbook)
    return alert.dashboardURL or alert.generatorURL or None


def notifications(hook: Webhook, source: str, runbook_base_url: str | None = None) -> list[Notification]:
    """One Notification per alert: a readable title for Slack, the whole alert as the Kafka event."""
    out = []
    for alert in hook.alerts:
        labels = alert.labels
        name = labels.get("alertname", "alert")
        summary = alert.annotations.get("summary") or alert.annotations.get("message") or ""
        resolved = alert.status == "resolved"
        severity: Severity = "success" if resolved else SEVERITIES.get(labels.get("severity", "").lower(), "warning")
        title = f"{'RESOLVED' if resolved else 'FIRING'} {name}" + (f": {summary}" if summary else "")
        fields = {k: labels[k] for k in FIELDS if k in labels}
        if "severity" in labels:
            fields["severity"] = labels["severity"]
        fields["since"] = alert.startsAt or ""
        if resolved and alert.endsAt:
            fields["resolved at"] = alert.endsAt
        event = {
            "source": source,
            "receiver": hook.receiver,
            "groupKey": hook.groupKey,
            "externalURL": hook.externalURL,
            **alert.model_dump(mode="json", exclude_none=True),
        }
        out.append(
            Notification(
                title=title,
                text=alert.annotations.get("description", ""),
                severity=severity,
                kind="alert",
                fields=fields,
                link=_link(alert, runbook_base_url),
                event=event,
            )
        )
    return out
