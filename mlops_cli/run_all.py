"""`mlops pipeline run`: the seven stages in order, stopping at the first failure."""

from __future__ import annotations

import importlib
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .errors import MlopsError, StageFailed
from .settings import Settings
from .stages import MODULES, STAGES
from .ui import progress


class StageRow(BaseModel):
    model_config = ConfigDict(frozen=True)
    stage: str
    status: Literal["passed", "failed", "skipped", "not run"]
    duration_s: float = 0.0
    message: str = ""


class PipelineResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    passed: bool
    stages: list[StageRow]
    failed_stage: str | None = None
    error: str | None = None
    exit_code: int = 0

    def lines(self) -> list[str]:
        width = max(len(s) for s in STAGES)
        out = [f"{'stage':<{width}}  {'status':<8}  {'time':>7}  detail"]
        for row in self.stages:
            time_s = f"{row.duration_s:6.1f}s" if row.status != "not run" else "      -"
            out.append(
                f"{row.stage:<{width}}  {row.status:<8}  {time_s}  {row.message.splitlines()[0] if row.message else ''}"
            )
        return out


def run(settings: Settings) -> PipelineResult:
    """The stages in order, holding the workdir lock throughout (no other run interleaves)."""
    from .errors import UsageError
    from .sources import parse_ref
    from .workdir_lock import hold

    if not settings.model:  # validate-model needs one: say so before unit-test spends minutes
        raise UsageError(
            "no model given",
            hint="pass --model REF, set MLOPS_MODEL or `model:` in mlops.yaml; "
            "`mlops model list` shows the local store",
        )
    parse_ref(settings.model)
    with hold(settings.workdir, "mlops pipeline run", settings.lock_wait_s):
        return _run(settings)


def _run(settings: Settings) -> PipelineResult:
    rows: list[StageRow] = []
    failure: MlopsError | None = None
    failed_stage = None
    for index, name in enumerate(STAGES, start=1):
        if failure is not None:
            rows.append(StageRow(stage=name, status="not run"))
            continue
        progress(f"[{index}/{len(STAGES)}] {name}")
        start = time.monotonic()
        try:
            result = importlib.import_module(MODULES[name]).run(settings)
        except MlopsError as exc:
            failure, failed_stage = exc, name
            rows.append(StageRow(stage=name, status="failed", duration_s=time.monotonic() - start, message=str(exc)))
            continue
        rows.append(
            StageRow(stage=name, status=result.status, duration_s=time.monotonic() - start, message=result.message)
        )
    return PipelineResult(
        passed=failure is None,
        stages=rows,
        failed_stage=failed_stage,
        error=str(failure) if failure else None,
        exit_code=failure.exit_code if failure else 0,
    )


def raise_if_failed(result: PipelineResult) -> None:
    if not result.passed:
        exc = StageFailed(f"pipeline stopped at {result.failed_stage}: {result.error}")
        exc.exit_code = result.exit_code
        raise exc
