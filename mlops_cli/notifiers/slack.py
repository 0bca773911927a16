"""Slack through an incoming webhook (slack_sdk's WebhookClient), as a Block Kit message.

The webhook URL is a secret (anyone holding it can post): it comes from config as a SecretStr
or from a file, and never appears in an error message or a log line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import DeliveryError, Notification

if TYPE_CHECKING:
    from ..config import Settings

ICONS = {"info": ":information_source:", "success": ":white_check_mark:",
         "warning": ":warning:", "critical": ":rotating_light:"}

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks): header text 150 chars,
# section text 3000, at most 10 fields of 2000 each.
HEADER_MAX, TEXT_MAX, FIELDS_MAX, FIELD_MAX = 150, 3000, 10, 2000

# slack_sdk logs failed requests at ERROR on its own logger; keep that off the user's terminal
# (our own one-line error says what happened) and never let its DEBUG lines print the URL.
_QUIET = logging.getLogger("mlops.notifiers.slack.sdk")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(note: Notification) -> dict[str, Any]:
    """The webhook body: a plain-text fallback (for notifications) and Block Kit blocks."""
    icon = ICONS.get(note.severity, "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(note.title, HEADER_MAX), "emoji": True}},
    ]
    if note.text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(escape(note.text), TEXT_MAX)}})
    if note.fields:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{escape(k)}*\n{escape(v)}", FIELD_MAX)}
            for k, v in list(note.fields.items())[:FIELDS_MAX]]})
    context = f"{icon} {note.severity} · {note.kind} · {note.time}".strip()
    if note.link:
        context += f" · <{note.link}|details>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": f"{icon} {note.title}".strip(), "blocks": blocks}


class SlackNotifier:
    name = "slack"

    def __init__(self, settings: "Settings"):
        cfg = settings.notify.slack
        self.url = cfg.url()
        if not self.url:
            raise ConfigError("the slack notifier has no webhook URL",
                              hint="set notify.slack.webhook_url (or MLOPS_NOTIFY__SLACK__WEBHOOK_URL) "
                                   "or notify.slack.webhook_url_file")
        if not self.url.startswith(("https://", "http://")):
            raise ConfigError("notify.slack.webhook_url is not an http(s) URL")
        self.timeout = cfg.timeout_s

    def send(self, note: Notification) -> None:
        from slack_sdk.webhook import WebhookClient

        client = WebhookClient(self.url, timeout=max(1, round(self.timeout)), logger=_QUIET, retry_handlers=[])
        try:
            resp = client.send_dict(render(note))
        except Exception as exc:  # urllib's URLError, timeouts, TLS errors: the sink is unreachable
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"slack webhook unreachable: {reason}", retryable=True) from None
        if resp.status_code == 200:
            return
        retryable = resp.status_code == 429 or resp.status_code >= 500
        body = (resp.body or "").strip()[:200]
        raise DeliveryError(f"slack webhook answered {resp.status_code} {body}".rstrip(), retryable=retryable)
