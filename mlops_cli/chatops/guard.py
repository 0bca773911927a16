"""Is this request from Slack, now, and new? Signature, timestamp window, replays and retries.

The signature is slack_sdk's `SignatureVerifier` (v0 HMAC-SHA256 of `v0:<timestamp>:<body>` with the
signing secret); the timestamp must be within 5 minutes of our clock. A signature seen before is a
replay: refused, unless the request says it is Slack's own retry (`X-Slack-Retry-Num`), which is
answered 200 and not acted on. Slack retries and re-sends are also recognised by the payload's
`trigger_id` (unique per command or click): a second request with one already seen is not acted on.
Both memories are kept for twice the window plus a margin: a request is accepted while its timestamp is
within 5 minutes of our clock either way, so one stamped up to 5 minutes ahead (a clock behind Slack's)
stays acceptable for up to 10 minutes after it arrives, and its signature must be remembered that long.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Literal

from slack_sdk.signature import Clock, SignatureVerifier

WINDOW_S = 300
KEEP_S = 2 * WINDOW_S + 60  # a timestamp may be WINDOW_S ahead of our clock and is valid WINDOW_S after that
Verdict = Literal["ok", "unsigned", "forged", "stale", "replayed", "retry"]


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]):
        self._now = now

    def now(self) -> float:
        return self._now()


class _Seen:
    """Keys remembered for KEEP_S seconds, oldest dropped first; bounded."""

    def __init__(self, now: Callable[[], float], max_items: int = 200_000):
        self.now, self.max_items = now, max_items
        self.items: OrderedDict[str, float] = OrderedDict()

    def _prune(self) -> None:
        limit = self.now() - KEEP_S
        while self.items and (len(self.items) > self.max_items or next(iter(self.items.values())) < limit):
            self.items.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        self._prune()
        return key in self.items

    def add(self, key: str) -> None:
        self.items[key] = self.now()
        self._prune()


class RequestGuard:
    def __init__(self, signing_secret: str, now: Callable[[], float] = time.time):
        self.now = now
        self.verifier = SignatureVerifier(signing_secret, clock=_Clock(now))
        self.signatures = _Seen(now)
        self.triggers = _Seen(now)

    def check(self, body: bytes, headers: Mapping[str, str]) -> Verdict:
        """The verdict on a request's signature and freshness; an "ok" signature is remembered."""
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            return "unsigned"
        try:
            age = abs(self.now() - int(timestamp))
        except ValueError:
            return "forged"
        if age > WINDOW_S:
            return "stale"
        if not self.verifier.is_valid(body, timestamp, signature):
            return "forged"
        if signature in self.signatures:
            return "retry" if headers.get("x-slack-retry-num") else "replayed"
        self.signatures.add(signature)
        return "ok"

    def first_time(self, trigger: str | None) -> bool:
        """True the first time a trigger_id is seen (None: no id to tell, so it counts as new)."""
        if not trigger:
            return True
        if trigger in self.triggers:
            return False
        self.triggers.add(trigger)
        return True


class Decisions:
    """Approvals being answered or answered (`job#build`): one decision per build. Bounded: beyond max_items
    the oldest are forgotten; a late click on one reaches Jenkins, which answers that the build is not
    waiting any more, so nothing is decided twice either way."""

    def __init__(self, max_items: int = 10_000):
        self.max_items = max_items
        self.items: OrderedDict[str, None] = OrderedDict()

    def claim(self, key: str) -> bool:
        """True when key was not claimed yet (and now is)."""
        if key in self.items:
            return False
        self.items[key] = None
        while len(self.items) > self.max_items:
            self.items.popitem(last=False)
        return True

    def release(self, key: str) -> None:
        """The decision did not go through: the build may be decided again."""
        self.items.pop(key, None)

    def __len__(self) -> int:
        return len(self.items)
