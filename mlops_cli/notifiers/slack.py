"""Slack as a Block Kit message: through the Web API with a bot token (chat.postMessage: any channel,
replies in a thread), else through an incoming webhook (slack_sdk's WebhookClient).

The webhook URL and the bot token are secrets (anyone holding them can post): they come from config
as a SecretStr or from a file, and never appear in an error message or a log line.

`approval_blocks` makes the Approve/Reject buttons of a release's approval gate; their `value` is a
JSON object that `parse_approval_value` reads back (the chatops service answers the Jenkins input
step from it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..extras import load
from . import DeliveryError, Notification

if TYPE_CHECKING:
    from ..settings import Settings

ICONS = {
    "info": ":information_source:",
    "success": ":white_check_mark:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}

# Answers that refuse every message (the webhook was revoked, its workspace or channel is gone):
# the sink is down until someone fixes the URL. Slack documents 400 invalid_payload/invalid_blocks,
# 403 invalid_token/action_prohibited, 404 no_service/channel_not_found, 410 channel_is_archived.
SINK_DOWN_STATUS = {401, 403, 404, 410}
# 400 answers about this one message (it will never be accepted as it is): dead letters.
MESSAGE_ERRORS = {
    "invalid_payload",
    "invalid_blocks",
    "invalid_blocks_format",
    "invalid_attachments",
    "too_many_attachments",
    "no_text",
    "msg_too_long",
}

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
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _clip(f"*{escape(k)}*\n{escape(v)}", FIELD_MAX)}
                    for k, v in list(note.fields.items())[:FIELDS_MAX]
                ],
            }
        )
    if note.link and note.button:
        blocks.append(
            {
                "type": "actions",
                "block_id": "mlops_links",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "mlops_open_build",
                        "url": note.link,
                        "text": {"type": "plain_text", "text": _clip(note.button, 75)},
                    }
                ],
            }
        )
    if note.approval is not None:
        blocks += approval_blocks(note.approval)
    context = f"{icon} {note.severity} · {note.kind} · {note.time}".strip()
    if note.link:
        context += f" · <{note.link}|details>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": f"{icon} {note.title}".strip(), "blocks": blocks}


# The approval gate's buttons: the contract with the chatops service (which answers the Jenkins input step).
APPROVAL_BLOCK_ID = "mlops_approval"
APPROVE_ACTION_ID = "mlops_approve"
REJECT_ACTION_ID = "mlops_reject"
APPROVAL_KEYS = ("job", "build", "build_url", "input_id", "requested_by", "model", "digest")
BUTTON_VALUE_MAX = 2000  # Block Kit: a button's value is at most 2000 characters


def approval_value(
    job: str,
    build: int,
    build_url: str,
    input_id: str = "ReleaseApproval",
    requested_by: str | None = None,
    model: str | None = None,
    digest: str | None = None,
) -> dict[str, Any]:
    """The approval request a button carries, with the keys the chatops service reads."""
    return {
        "job": job,
        "build": int(build),
        "build_url": build_url,
        "input_id": input_id,
        "requested_by": requested_by,
        "model": model,
        "digest": digest,
    }


def approval_blocks(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An actions block (block_id mlops_approval) with Approve (mlops_approve, primary) and Reject
    (mlops_reject, danger) buttons; each button's value is `request` as a JSON string."""
    value = json.dumps({k: request.get(k) for k in APPROVAL_KEYS}, separators=(",", ":"), sort_keys=True)
    if len(value) > BUTTON_VALUE_MAX:
        raise ValueError(
            f"the approval request is {len(value)} characters as JSON; a button value takes {BUTTON_VALUE_MAX}"
        )
    return [
        {
            "type": "actions",
            "block_id": APPROVAL_BLOCK_ID,
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION_ID,
                    "style": "primary",
                    "value": value,
                    "text": {"type": "plain_text", "text": "Approve", "emoji": True},
                },
                {
                    "type": "button",
                    "action_id": REJECT_ACTION_ID,
                    "style": "danger",
                    "value": value,
                    "text": {"type": "plain_text", "text": "Reject", "emoji": True},
                },
            ],
        }
    ]


def parse_approval_value(value: str) -> dict[str, Any]:
    """The approval request from a button's value; ValueError when it is not one of ours."""
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        raise ValueError("the button value is not JSON") from None
    if not isinstance(data, dict) or not all(k in data for k in APPROVAL_KEYS):
        raise ValueError(
            f"the button value lacks {', '.join(k for k in APPROVAL_KEYS if not isinstance(data, dict) or k not in data)}"
        )
    if not isinstance(data["build"], int) or isinstance(data["build"], bool) or not data["job"] or not data["input_id"]:
        raise ValueError("the button value has no job, build number or input id")
    return data


# Web API errors (https://docs.slack.dev/reference/methods/chat.postMessage) that refuse every message
# (the token or the channel is wrong) and those about this one message.
API_SINK_DOWN = {
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "no_permission",
    "missing_scope",
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "restricted_action",
    "team_access_not_granted",
    "ekm_access_denied",
}
API_RETRYABLE = {
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}


class SlackNotifier:
    name = "slack"

    def __init__(self, settings: Settings):
        cfg = settings.notify.slack
        self.url = cfg.url()
        self.token = cfg.token()
        self.channel = cfg.channel
        self.api_url = cfg.api_url if cfg.api_url.endswith("/") else cfg.api_url + "/"
        if not self.url and not self.token:
            raise ConfigError(
                "the slack notifier has no webhook URL and no bot token",
                hint="set notify.slack.webhook_url (or MLOPS_NOTIFY__SLACK__WEBHOOK_URL) "
                "or notify.slack.webhook_url_file, or notify.slack.bot_token with a channel",
            )
        if self.url:
            check_url(self.url)
        if self.token and any(c.isspace() for c in self.token):
            raise ConfigError(
                "notify.slack.bot_token contains whitespace", hint="check the secret for a pasted space or line break"
            )
        self.timeout = cfg.timeout_s
        # imported here, not in send(): a missing package is a configuration error at start,
        # not a delivery failure retried forever (the registry turns it into a one-line hint)
        self._client_class = load("slack_sdk.webhook", "the slack notifier talks to Slack", "slack").WebhookClient

    def send(self, note: Notification) -> None:
        channel = note.channel or self.channel
        if self.token and channel:
            self._post(note, channel)
            return
        if not self.url:
            raise DeliveryError(
                "slack: a bot token but no channel to post to",
                retryable=False,
                sink_down=True,
                hint="set notify.slack.channel or pass a channel",
            )
        self._send_webhook(note, self.url)

    def _post(self, note: Notification, channel: str) -> str | None:
        """chat.postMessage with the bot token, in the note's thread when it has one; returns the message's ts."""
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError

        client = WebClient(
            token=self.token,
            base_url=self.api_url,
            timeout=max(1, round(self.timeout)),
            logger=_QUIET,
            retry_handlers=[],
        )
        body = render(note)
        try:
            resp = client.chat_postMessage(
                channel=channel,
                text=body["text"],
                blocks=body["blocks"],
                thread_ts=note.thread_ts or None,
                unfurl_links=False,
            )
        except SlackApiError as exc:
            status = exc.response.status_code
            error = str((exc.response.data or {}).get("error") if isinstance(exc.response.data, dict) else "")[:100]
            message = f"slack chat.postMessage to {channel} answered {status} {error}".rstrip()
            if status == 429 or status >= 500 or error in API_RETRYABLE:
                raise DeliveryError(message, retryable=True) from None
            raise DeliveryError(
                message, retryable=False, sink_down=error in API_SINK_DOWN or status in SINK_DOWN_STATUS
            ) from None
        except (
            Exception
        ) as exc:  # urllib errors, timeouts: unreachable (never quote the exception: headers hold the token)
            raise DeliveryError(f"slack Web API unreachable: {_reason(exc)}", retryable=True) from None
        return resp.get("ts")

    def _send_webhook(self, note: Notification, url: str) -> None:
        client = self._client_class(url, timeout=max(1, round(self.timeout)), logger=_QUIET, retry_handlers=[])
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
        raise ConfigError(
            "notify.slack.webhook_url contains whitespace or control characters",
            hint="check the secret for a trailing newline or a pasted space",
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("notify.slack.webhook_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("notify.slack.webhook_url is not an http(s) URL with a host")
