"""A test double of Slack for a Slack app: the Web API methods the chatops service calls
(`chat.postMessage`, `chat.update`, `usergroups.users.list`), `response_url`s, and Slack's side of
request signing (the sender that signs slash commands and button clicks with slack_sdk's own
SignatureVerifier code, as Slack does).

No Slack can run here. Shapes follow https://docs.slack.dev/reference/methods: every Web API answer
is HTTP 200 with `{"ok": true, ...}` or `{"ok": false, "error": "..."}`; the bot token comes as
`Authorization: Bearer xoxb-...` (`invalid_auth` otherwise); a channel the bot is not in answers
`channel_not_found`. A response_url (`/response/<id>`) answers 200 `ok`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from slack_sdk.signature import SignatureVerifier


class SlackWebDouble:
    def __init__(
        self,
        token: str = "xoxb-double-token",
        channels: tuple[str, ...] = ("C_RELEASES",),
        groups: dict[str, list[str]] | None = None,
    ):
        self.token = token
        self.channels = set(channels)
        self.groups = dict(groups or {})
        self.messages: list[dict[str, Any]] = []  # every posted message: channel, ts, thread_ts, text, blocks
        self.updates: list[dict[str, Any]] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}  # response_url id -> bodies
        self.calls: list[str] = []
        self.delay_s = 0.0  # every answer comes this late (a slow Slack)
        self.lock = threading.Lock()
        self._ts = itertools.count(1)
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    # --- serving --------------------------------------------------------------------------------

    def start(self) -> str:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, kind = double.handle(self.command, self.path, self.headers, raw)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def response_url(self) -> str:
        return f"{self.url}/response/{uuid.uuid4().hex}"

    def handle(self, method: str, raw_path: str, headers: Any, raw: bytes) -> tuple[int, Any, str]:
        url = urlparse(raw_path)
        with self.lock:
            self.calls.append(url.path)
        time.sleep(self.delay_s)
        if url.path.startswith("/response/"):
            with self.lock:
                self.responses.setdefault(url.path.rsplit("/", 1)[1], []).append(json.loads(raw or b"{}"))
            return 200, "ok", "text/plain"
        if not url.path.startswith("/api/"):
            return 404, "not found", "text/plain"
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, "application/json"
        kind = (headers.get("Content-Type") or "").split(";")[0]
        if kind == "application/json":
            args = json.loads(raw or b"{}")
        else:
            args = {k: v[0] for k, v in parse_qs(raw.decode() if raw else url.query).items()}
        answer = self.method(url.path[len("/api/") :], args)
        return 200, answer, "application/json"

    def method(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name in ("chat.postMessage", "chat.update"):
            channel = args.get("channel")
            if channel not in self.channels:
                return {"ok": False, "error": "channel_not_found"}
            if not args.get("text") and not args.get("blocks"):
                return {"ok": False, "error": "no_text"}
            blocks = args.get("blocks")
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            with self.lock:
                if name == "chat.update":
                    self.updates.append(
                        {"channel": channel, "ts": args.get("ts"), "text": args.get("text"), "blocks": blocks}
                    )
                    return {"ok": True, "channel": channel, "ts": args.get("ts"), "text": args.get("text")}
                ts = f"{1_700_000_000 + next(self._ts)}.000100"
                message = {
                    "channel": channel,
                    "ts": ts,
                    "thread_ts": args.get("thread_ts"),
                    "text": args.get("text"),
                    "blocks": blocks,
                }
                self.messages.append(message)
            return {"ok": True, "channel": channel, "ts": ts, "message": {"text": args.get("text"), "ts": ts}}
        if name == "usergroups.users.list":
            group = args.get("usergroup")
            if group not in self.groups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": list(self.groups[group])}
        return {"ok": False, "error": "unknown_method"}

    # --- what the tests look at -----------------------------------------------------------------

    def roots(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if not m["thread_ts"]]

    def thread(self, ts: str) -> list[str]:
        with self.lock:
            return [m["text"] for m in self.messages if m["thread_ts"] == ts]

    def answers(self, response_url: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.responses.get(response_url.rsplit("/", 1)[1], []))

    def wait(self, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
        """condition()'s value once truthy; AssertionError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"not within {timeout}s: {getattr(condition, '__name__', condition)}")


class SlackSender:
    """Slack's side of a request to the app: the documented form bodies, signed with the signing
    secret by slack_sdk's own code (`v0=` HMAC-SHA256 of `v0:<timestamp>:<body>`)."""

    def __init__(self, signing_secret: str, team: str = "T_TEAM", channel: str = "C_RELEASES"):
        self.signer = SignatureVerifier(signing_secret)
        self.team, self.channel = team, channel

    def sign(self, body: str, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": self.signer.generate_signature(timestamp=ts, body=body),
            "Content-Type": "application/x-www-form-urlencoded",
        }

    def command(
        self,
        text: str,
        user: str,
        response_url: str,
        *,
        team: str | None = None,
        channel: str | None = None,
        trigger_id: str | None = None,
    ) -> str:
        return urlencode(
            {
                "token": "deprecated-verification-token",
                "team_id": team or self.team,
                "team_domain": "example",
                "channel_id": channel or self.channel,
                "channel_name": "releases",
                "user_id": user,
                "user_name": user.lower(),
                "command": "/mlops",
                "text": text,
                "api_app_id": "A_MLOPS",
                "is_enterprise_install": "false",
                "response_url": response_url,
                "trigger_id": trigger_id or f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:12]}",
            }
        )

    def click(
        self,
        action_id: str,
        value: str,
        user: str,
        response_url: str,
        message: dict[str, Any],
        *,
        team: str | None = None,
        channel: str | None = None,
        trigger_id: str | None = None,
    ) -> str:
        payload = {
            "type": "block_actions",
            "team": {"id": team or self.team, "domain": "example"},
            "user": {"id": user, "username": user.lower(), "team_id": team or self.team},
            "api_app_id": "A_MLOPS",
            "token": "deprecated-verification-token",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": channel or self.channel,
                "is_ephemeral": False,
            },
            "trigger_id": trigger_id or f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:12]}",
            "channel": {"id": channel or self.channel, "name": "releases"},
            "message": message,
            "response_url": response_url,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "mlops_approval",
                    "value": value,
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return urlencode({"payload": json.dumps(payload)})
