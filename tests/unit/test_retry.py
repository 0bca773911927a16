"""mlops_cli.retry: the one retry-with-backoff helper (jitter within [80 %, 100 %] of the nominal wait)."""

import pytest

from mlops_cli.errors import StageFailed, TemporaryError
from mlops_cli.retry import JITTER, backoff_delay, call_with_retries


def test_backoff_doubles_is_capped_and_jitter_only_shortens():
    assert [backoff_delay(n, 1.0, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(10, 1.0, 60.0, rand=lambda: 0.0) == 60.0
    assert backoff_delay(1, 2.0, rand=lambda: 1.0) == pytest.approx(2.0 * (1 - JITTER))
    waits = {backoff_delay(3, 1.0) for _ in range(200)}
    assert all(4.0 * (1 - JITTER) <= w <= 4.0 for w in waits) and len(waits) > 100  # spread, not in step
    assert backoff_delay(2, 1.0, jitter=0) == 2.0
    with pytest.raises(ValueError):
        backoff_delay(0, 1.0)


def _flaky(failures, exc=lambda: TemporaryError("registry down")):
    calls = []

    def action():
        calls.append(1)
        if len(calls) <= failures:
            raise exc()
        return "done"

    return action, calls


def test_retries_a_temporary_error_then_succeeds():
    action, calls = _flaky(2)
    pauses, said = [], []
    assert (
        call_with_retries(
            action,
            retries=3,
            backoff_s=1.0,
            sleep=pauses.append,
            on_retry=lambda exc, delay: said.append((str(exc), delay)),
        )
        == "done"
    )
    assert len(calls) == 3 and len(pauses) == 2
    assert 0.8 <= pauses[0] <= 1.0 and 1.6 <= pauses[1] <= 2.0
    assert [s for s, _ in said] == ["registry down", "registry down"] and [d for _, d in said] == pauses


def test_gives_up_saying_how_many_attempts_with_the_hint():
    action, calls = _flaky(10)
    pauses = []
    with pytest.raises(TemporaryError) as caught:
        call_with_retries(action, retries=2, backoff_s=0.5, sleep=pauses.append, give_up_hint="check the address")
    assert len(calls) == 3 and len(pauses) == 2
    assert str(caught.value) == "registry down (gave up after 3 attempts) (check the address)"
    action, _ = _flaky(10)
    with pytest.raises(TemporaryError, match=r"\(gave up after 1 attempt\)$"):
        call_with_retries(action, retries=0, backoff_s=0.5, sleep=pauses.append)


def test_a_permanent_failure_is_not_retried():
    action, calls = _flaky(1, exc=lambda: StageFailed("below threshold"))
    pauses = []
    with pytest.raises(StageFailed, match="^below threshold$"):
        call_with_retries(action, retries=5, backoff_s=1.0, sleep=pauses.append)
    assert len(calls) == 1 and pauses == []


def test_retryable_decides_per_exception_and_other_kinds_propagate_unchanged():
    class Refused(Exception):
        def __init__(self, retryable):
            super().__init__("refused")
            self.retryable = retryable

    action, calls = _flaky(10, exc=lambda: Refused(retryable=len(calls) < 2))
    pauses = []
    with pytest.raises(Refused):
        call_with_retries(
            action,
            retries=5,
            backoff_s=0.1,
            retry_on=(Refused,),
            retryable=lambda exc: exc.retryable,
            sleep=pauses.append,
        )
    assert len(calls) == 2 and len(pauses) == 1  # the second refusal was not retryable
    action, calls = _flaky(10, exc=lambda: Refused(retryable=True))
    with pytest.raises(Refused):  # not a TemporaryError: raised as it is when attempts run out
        call_with_retries(action, retries=1, backoff_s=0.1, retry_on=(Refused,), sleep=pauses.append)
    assert len(calls) == 2
