"""What every stage shares: its result shape and the record of its run in state.json."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from ..settings import Settings
from ..state import StageRecord, State, now
from ..workdir_lock import hold


class StageResult(BaseModel):
    """The typed result of a stage; `lines()` is its human form, model_dump() its JSON form."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())
    stage: str
    status: Literal["passed", "skipped"] = "passed"
    message: str = ""

    def lines(self) -> list[str]:
        return [self.message] if self.message else []


R = TypeVar("R", bound=StageResult)


def _record(settings: Settings, name: str, status: str, started_at: str, start: float, message: str) -> None:
    state = State.load(settings.workdir)
    state.stages[name] = StageRecord(
        status=status, started_at=started_at, duration_s=round(time.monotonic() - start, 3), message=message
    )
    state.save(settings.workdir)


def stage(name: str) -> Callable[[Callable[[Settings], R]], Callable[[Settings], R]]:
    """Record the stage's status, start time and duration in state, whatever the outcome.

    The whole run holds the workdir lock (mlops_cli/workdir_lock.py): one run at a time.
    """

    def decorate(fn: Callable[[Settings], R]) -> Callable[[Settings], R]:
        @functools.wraps(fn)
        def run(settings: Settings) -> R:
            with hold(settings.workdir, f"mlops {name}", settings.lock_wait_s):
                return _run(settings)

        def _run(settings: Settings) -> R:
            started_at, start = now(), time.monotonic()
            State.load(settings.workdir)  # an unreadable state file fails before any work
            try:
                result = fn(settings)
            except BaseException as exc:
                _record(settings, name, "failed", started_at, start, str(exc) or type(exc).__name__)
                raise
            _record(settings, name, result.status, started_at, start, result.message)
            return result

        return run

    return decorate
