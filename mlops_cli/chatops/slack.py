"""Talking back to Slack: chat.postMessage / chat.update with the bot token (slack_sdk's WebClient),
and replies to a command's or a click's `response_url` (slack_sdk's WebhookClient).

A response_url comes inside a signed request, but it is still only used under
`chatops.response_url_prefix` (https://hooks.slack.com/): same scheme, same host and port, no user
info, path under the prefix's path, so a request can never make the service post elsewhere (a plain
string prefix would let `https://hooks.slack.com.evil.example/` or `https://hooks.slack.com@evil.example/`
through a prefix written without its final slash). slack_sdk's own loggers are kept quiet: their DEBUG lines could show the token.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

log = logging.getLogger("mlops.chatops")
_QUIET = logging.getLogger("mlops.chatops.sdk")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
_QUIET.disabled = True


class ReplyError(Exception):
    """Slack did not take a reply: the error code Slack gave, or why it could not be reached."""


def under_prefix(url: str, prefix: str) -> bool:
    """True when url has prefix's scheme, host and port, no user info, and a path under prefix's path."""
    if not isinstance(url, str):
        return False
    try:
        got, want = urlsplit(url), urlsplit(prefix)
        ports = got.port, want.port
    except ValueError:
        return False
    if got.scheme.lower() != want.scheme.lower() or not got.hostname or got.hostname != want.hostname:
        return False
    if got.username is not None or got.password is not None or ports[0] != ports[1]:
        return False
    base = want.path if want.path.endswith("/") else want.path + "/"
    return (got.path + "/").startswith(base) and ".." not in got.path.split("/") and "\\" not in url


class Slack:
    def __init__(self, token: str, api_url: str, response_url_prefix: str, timeout_s: float = 10.0):
        self.client = WebClient(
            token=token,
            base_url=api_url if api_url.endswith("/") else api_url + "/",
            timeout=max(1, round(timeout_s)),
            logger=_QUIET,
        )
        self.prefix = response_url_prefix
        self.timeout = max(1, round(timeout_s))

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, method)(**kwargs).data
        except SlackApiError as exc:
            raise ReplyError(f"Slack refused {method}: {exc.response.get('error', 'unknown error')}") from None
        except Exception as exc:  # unreachable, TLS, timeout: the token never appears in these
            raise ReplyError(f"Slack unreachable for {method}: {type(exc).__name__}") from None

    def post(
        self, channel: str, text: str, thread_ts: str | None = None, blocks: list[dict[str, Any]] | None = None
    ) -> str:
        """Post a message (in a thread when thread_ts is given); its ts."""
        kwargs: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        if blocks:
            kwargs["blocks"] = blocks
        return str(self._call("chat_postMessage", **kwargs)["ts"])

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self._call("chat_update", channel=channel, ts=ts, text=text, blocks=blocks)

    def group_members(self, group: str) -> list[str]:
        return list(self._call("usergroups_users_list", usergroup=group)["users"])

    def respond(
        self,
        response_url: str,
        text: str,
        *,
        ephemeral: bool = True,
        replace_original: bool = False,
        blocks: list[dict[str, Any]] | None = None,
    ) -> None:
        """Answer through the request's response_url (valid 30 minutes, 5 answers)."""
        if not under_prefix(response_url, self.prefix):
            raise ReplyError("the response_url is not under chatops.response_url_prefix: not answered")
        body: dict[str, Any] = {"text": text, "response_type": "ephemeral" if ephemeral else "in_channel"}
        if replace_original:
            body["replace_original"] = True
        if blocks:
            body["blocks"] = blocks
        try:
            resp = WebhookClient(response_url, timeout=self.timeout, logger=_QUIET, retry_handlers=[]).send_dict(body)
        except Exception as exc:
            raise ReplyError(f"Slack unreachable for the response_url: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise ReplyError(f"Slack answered {resp.status_code} to the response_url: {(resp.body or '')[:100]}")
