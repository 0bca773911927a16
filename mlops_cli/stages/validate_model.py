"""validate-model: refuse a model unless its metrics, tag, digest and interface all check out."""

from __future__ import annotations

import operator
import tempfile
from pathlib import Path
from typing import Optional

from ..compat import breaking_changes
from ..config import THRESHOLD_RE, Settings
from ..errors import StageFailed, UsageError
from ..digests import json_digest, sha256_file
from ..sources import ModelMetadata, get_source, parse_ref
from ..state import CheckRecord, ModelRecord, State, ValidationRecord
from ..ui import progress
from .base import StageResult, stage

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


class ValidateResult(StageResult):
    model_ref: str
    sha256: str
    checks: list[CheckRecord]

    def lines(self) -> list[str]:
        return [self.message] + [f"  ok  {c.name}: {c.detail}" for c in self.checks]


def _threshold_checks(meta: ModelMetadata, thresholds: dict[str, str]) -> list[CheckRecord]:
    checks = []
    for metric, condition in sorted(thresholds.items()):
        match = THRESHOLD_RE.match(condition)
        op, bound = match.group(1), float(match.group(2))
        value = meta.metrics.get(metric)
        if value is None:
            checks.append(CheckRecord(name=f"metric {metric}", passed=False, detail=f"{metric} is not reported by the model"))
        else:
            ok = OPS[op](value, bound)
            checks.append(CheckRecord(name=f"metric {metric}", passed=ok,
                                      detail=f"{metric} = {value:g}, needs {op} {bound:g}"))
    return checks


def _schema_check(meta: ModelMetadata, state: State, allow_breaking: bool) -> Optional[CheckRecord]:
    deployed = state.deployments.get("prod") or state.deployments.get("test")
    if deployed is None:
        return None
    new = meta.schema_.model_dump(mode="json")
    problems = breaking_changes(deployed.schema_, new)
    where = f"{deployed.model_name}@{deployed.model_version} in {deployed.env}"
    if not problems:
        return CheckRecord(name="interface", passed=True, detail=f"compatible with {where}")
    detail = f"breaking change against {where}: " + "; ".join(problems)
    if allow_breaking:
        return CheckRecord(name="interface", passed=True, detail=detail + " (allowed by --allow-breaking)")
    return CheckRecord(name="interface", passed=False, detail=detail + " (pass --allow-breaking to accept)")


def metadata_digest(meta: ModelMetadata) -> str:
    """What validation saw of the metadata: assemble-server refuses metadata that changed since."""
    return json_digest(meta.model_dump(mode="json", by_alias=True))


@stage("validate-model")
def run(settings: Settings) -> ValidateResult:
    if not settings.model:
        raise UsageError("no model given", hint="pass --model REF, set MLOPS_MODEL or `model:` in mlops.yaml")
    ref = parse_ref(settings.model)
    state = State.load(settings.workdir)
    # Until this run passes, nothing validated before may go on to later stages.
    state.validation = ValidationRecord(passed=False, model_ref=str(ref))
    state.save(settings.workdir)

    source = get_source(ref.scheme, settings)
    progress(f"fetching metadata of {ref}")
    meta = source.fetch_metadata(ref)
    pinned = str(ref if ref.version else ref.__class__(ref.scheme, ref.name, meta.version))
    if meta.schema_ is None:
        raise StageFailed(f"model {pinned} has no input/output schema in its metadata",
                          hint="register it with --schema FILE")
    checks: list[CheckRecord] = []
    progress(f"downloading artifact {meta.artifact_name}")
    scratch = settings.workdir / "artifacts"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        actual = sha256_file(source.fetch_artifact(meta, Path(tmp)))
    checks.append(CheckRecord(
        name="artifact digest", passed=actual == meta.sha256,
        detail=f"sha256:{actual[:12]}" + ("" if actual == meta.sha256 else
                                          f" but metadata says sha256:{meta.sha256[:12]} (corrupt or altered artifact)")))
    thresholds = settings.validation.thresholds
    if not thresholds:
        progress("warning: no metric thresholds configured (validation.thresholds); metrics are not checked")
    checks += _threshold_checks(meta, thresholds)
    tag = settings.validation.validator_tag
    if tag:
        checks.append(CheckRecord(name="validator tag", passed=tag in meta.tags,
                                  detail=f"tag {tag!r} " + ("present" if tag in meta.tags else "missing")))
    interface = _schema_check(meta, state, settings.validation.allow_breaking)
    if interface is not None:
        checks.append(interface)

    passed = all(c.passed for c in checks)
    state.validation = ValidationRecord(passed=passed, model_ref=pinned, checks=checks,
                                        model_sha256=meta.sha256 if passed else None,
                                        metadata_sha256=metadata_digest(meta) if passed else None)
    if passed:
        state.model = ModelRecord(ref=pinned, name=meta.name, version=meta.version, framework=meta.framework,
                                  task=meta.task, sha256=meta.sha256, artifact_name=meta.artifact_name,
                                  schema=meta.schema_.model_dump(mode="json"), labels=meta.labels,
                                  class_name=meta.class_name, metrics=meta.metrics)
        state.bundle = state.image = state.smoke = None
    state.save(settings.workdir)
    if not passed:
        failed = "; ".join(c.detail for c in checks if not c.passed)
        raise StageFailed(f"model {pinned} failed validation: {failed}")
    return ValidateResult(stage="validate-model", model_ref=pinned, sha256=meta.sha256, checks=checks,
                          message=f"{pinned} passed {len(checks)} checks, pinned at sha256:{meta.sha256[:12]}")
