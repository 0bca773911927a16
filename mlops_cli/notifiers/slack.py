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

# Answers that refuse every message (the webhook was revoked, its workspace or channel is gone):
# the sink is down until someone fixes the URL. Slack documents 400 invalid_payload/invalid_blocks,
# 403 invalid_token/action_prohibited, 404 no_service/channel_not_found, 410 channel_is_archived.
SINK_DOWN_STATUS = {401, 403, 404, 410}
# 400 answers about this one message (it will never be accepted as it is): dead letters.
MESSAGE_ERRORS = {"invalid_payload", "invalid_blocks", "invalid_blocks_format", "invalid_attachments",
                  "too_many_attachments", "no_text", "msg_too_long"}

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks): header text 150 chars,
# section text 3000, at most 10 fields of 2000 each.
HEADER_MAX, TEXT_MAX, FIELDS_MAX, FIELD_MAX = 150, 3000, 10, 2000

# slack_sdk logs failed requests at ERROR on its own logger; keep that off the user's terminal
# (our own one-line error says what happened) and never let its DEBUG lines print the URL.
_QUIET = logging.getLogger("mlops.notifiers.slack.sdk")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
_QUIET.setLevel(logging.CRITICAL + 1)  # its lines quote the URL (a secret): drop them whatever logging is set up
_QUIET.disabled = True


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
        check_url(self.url)
        self.timeout = cfg.timeout_s
        # imported here, not in send(): a missing package is a configuration error at start,
        # not a delivery failure retried forever (the registry turns it into a one-line hint)
        from slack_sdk.webhook import WebhookClient

        self._client_class = WebhookClient

    def send(self, note: Notification) -> None:
        client = self._client_class(self.url, timeout=max(1, round(self.timeout)), logger=_QUIET, retry_handlers=[])
        try:
            resp = client.send_dict(render(note))
        except Exception as exc:  # urllib's URLError, timeouts, TLS errors: the sink is unreachable
            # the exception's text can hold the URL (http.client's InvalidURL quotes the path): never use it
            raise DeliveryError(f"slack webhook unreachable: {_reason(exc)}", retryable=True) from None
        if resp.status_code == 200:
            return
        body = (resp.body or "").strip()[:200]
        message = f"slack webhook answered {resp.status_code} {body}".rstrip()
        if resp.status_code == 429 or resp.status_code >= 500:
            raise DeliveryError(message, retryable=True)
        if resp.status_code == 413 or (resp.status_code == 400 and body in MESSAGE_ERRORS):
            raise DeliveryError(message, retryable=False)  # this message, never the next one
        # 401/403/404/410, or a 400 about the channel: every message would be refused the same way
        raise DeliveryError(message, retryable=False, sink_down=True)


def _reason(exc: BaseException) -> str:
    """What went wrong, without any text that could quote the URL: the type, and an OSError's strerror."""
    inner = getattr(exc, "reason", None)  # URLError wraps the socket's error
    for e in (inner, exc):
        if isinstance(e, OSError) and e.strerror:
            return f"{type(e).__name__}: {e.strerror}"
    if isinstance(inner, BaseException):
        return f"{type(exc).__name__} ({type(inner).__name__})"
    return type(exc).__name__


def check_url(url: str) -> None:
    """A ConfigError unless `url` is a plain http(s) URL; the message never quotes the URL (a secret)."""
    from urllib.parse import urlsplit

    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigError("notify.slack.webhook_url contains whitespace or control characters",
                          hint="check the secret for a trailing newline or a pasted space")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("notify.slack.webhook_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("notify.slack.webhook_url is not an http(s) URL with a host")
