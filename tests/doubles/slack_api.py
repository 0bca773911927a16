"""SlackWebAPIDouble: a test double of Slack's Web API methods chat.postMessage and chat.update.

No Slack workspace is reachable from a test, so this is a real HTTP server on 127.0.0.1 that answers
as https://slack.com/api/ does (https://docs.slack.dev/reference/methods/chat.postMessage,
.../chat.update): POST with `Authorization: Bearer <token>`, a JSON body (`application/json`) or a
form (`application/x-www-form-urlencoded`, where `blocks` is a JSON string); the answer is always
HTTP 200 with `{"ok": true, "channel", "ts", "message"}` or `{"ok": false, "error": "..."}`: errors
not_authed (no token), invalid_auth (wrong token), channel_not_found, no_text (neither text nor
blocks), invalid_blocks (blocks that are not a list of objects with a type, or an actions block
with more than 25 elements or a button value over 2000 characters), thread_not_found... is not
checked by Slack either (a reply to an unknown ts is posted as a new message there; here too);
message_not_found for chat.update of an unknown ts. `script` makes the next calls answer HTTP 429
(with Retry-After, as Slack rate-limits) or 500. Everything accepted is kept in `messages` (in
posting order, with its channel, ts and thread_ts) for the tests to read. Self-contained: it needs
nothing but the standard library.
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class SlackWebAPIDouble:
    def __init__(self, token: str = "xoxb-test-token", channels: tuple[str, ...] = ("C0RELEASES",)) -> None:
        self.token = token
        self.channels = set(channels)
        self.messages: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []  # every request: method, status, error
        self.script: list[int] = []  # HTTP statuses for the next calls (429, 500)
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, answer = double._answer(self.path, self.headers, raw)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api_url = f"http://127.0.0.1:{self.server.server_port}/api/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what Slack does
    def _answer(self, path: str, headers: Any, raw: bytes) -> tuple[int, dict[str, Any]]:
        method = path.split("?")[0].rsplit("/", 1)[-1]
        with self._lock:
            if self.script:
                status = self.script.pop(0)
                self.calls.append({"method": method, "status": status})
                return status, {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
            answer = self._call(method, headers, raw)
            self.calls.append({"method": method, "status": 200, "error": answer.get("error")})
            return 200, answer

    def _call(self, method: str, headers: Any, raw: bytes) -> dict[str, Any]:
        auth = headers.get("Authorization") or ""
        try:
            args = self._args(headers.get("Content-Type") or "", raw)
        except ValueError:
            return {"ok": False, "error": "invalid_json"}
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else args.get("token")
        if not token:
            return {"ok": False, "error": "not_authed"}
        if token != self.token:
            return {"ok": False, "error": "invalid_auth"}
        if method not in ("chat.postMessage", "chat.update"):
            return {"ok": False, "error": "unknown_method"}
        channel = args.get("channel")
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return {"ok": False, "error": "invalid_blocks"}
        if blocks is not None and not _blocks_ok(blocks):
            return {"ok": False, "error": "invalid_blocks"}
        if not args.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        if method == "chat.update":
            found = next((m for m in self.messages if m["channel"] == channel and m["ts"] == args.get("ts")), None)
            if found is None:
                return {"ok": False, "error": "message_not_found"}
            found.update(
                text=args.get("text", found["text"]),
                blocks=blocks if blocks is not None else found["blocks"],
                updated=found.get("updated", 0) + 1,
            )
            return {
                "ok": True,
                "channel": channel,
                "ts": found["ts"],
                "text": found["text"],
                "message": {"text": found["text"], "blocks": found["blocks"]},
            }
        ts = f"1700000000.{next(self._ts):06d}"
        message = {
            "channel": channel,
            "ts": ts,
            "thread_ts": args.get("thread_ts") or None,
            "text": args.get("text", ""),
            "blocks": blocks or [],
            "updated": 0,
        }
        self.messages.append(message)
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "message": {
                "type": "message",
                "text": message["text"],
                "blocks": message["blocks"],
                "ts": ts,
                **({"thread_ts": message["thread_ts"]} if message["thread_ts"] else {}),
            },
        }

    @staticmethod
    def _args(content_type: str, raw: bytes) -> dict[str, Any]:
        if content_type.startswith("application/json"):
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return data
        return {k: v[-1] for k, v in parse_qs(raw.decode()).items()}

    def in_thread(self, thread_ts: str | None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["thread_ts"] == thread_ts]


def _blocks_ok(blocks: Any) -> bool:
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return False
        if block["type"] == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                return False
            for el in elements:
                if not isinstance(el, dict) or len(str(el.get("value", ""))) > 2000:
                    return False
                if el.get("type") == "button" and not (el.get("text") and (el.get("action_id") or el.get("url"))):
                    return False
    return True
