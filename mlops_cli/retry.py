"""Retry with exponential backoff and jitter: the one implementation for pushes, registry probes, Kubernetes
API calls, notifications and the alert relay's sinks.

The n-th retry waits `backoff_s * 2**(n-1)` (capped at `max_backoff_s`), shortened by up to `jitter` of
itself at random, so that many clients retrying one server after the same failure do not retry in step
(AWS Architecture Blog, "Exponential Backoff And Jitter"). A configured backoff is thus the longest a wait
gets, never exceeded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import TemporaryError

T = TypeVar("T")
JITTER = 0.2  # each wait is 80-100 % of its nominal value


def backoff_delay(
    retry: int,
    backoff_s: float,
    max_backoff_s: float | None = None,
    *,
    jitter: float = JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait before retry number `retry` (1 = the first retry), in seconds."""
    if retry < 1:
        raise ValueError("retry counts from 1")
    nominal = backoff_s * 2 ** (retry - 1)
    if max_backoff_s is not None:
        nominal = min(nominal, max_backoff_s)
    return nominal * (1 - jitter * rand())


def call_with_retries(
    action: Callable[[], T],
    *,
    retries: int,
    backoff_s: float,
    retry_on: tuple[type[BaseException], ...] = (TemporaryError,),
    retryable: Callable[[BaseException], bool] = lambda exc: True,
    max_backoff_s: float | None = None,
    jitter: float = JITTER,
    on_retry: Callable[[BaseException, float], None] | None = None,
    give_up_hint: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`action()`, tried again up to `retries` times while it raises one of `retry_on` that is `retryable`.

    `on_retry(exc, delay)` is called before each wait (to say what failed and when it is tried again).
    Anything else, and the last failure, propagate; a TemporaryError that outlasted every attempt says so:
    "<message> (gave up after N attempts)", with `give_up_hint` when given."""
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except retry_on as exc:
            if not retryable(exc):
                raise
            if attempt == attempts:
                if isinstance(exc, TemporaryError):
                    tried = f"{attempts} attempts" if attempts != 1 else "1 attempt"
                    raise TemporaryError(
                        f"{exc.message} (gave up after {tried})", hint=give_up_hint or exc.hint
                    ) from exc
                raise
            delay = backoff_delay(attempt, backoff_s, max_backoff_s, jitter=jitter)
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")
