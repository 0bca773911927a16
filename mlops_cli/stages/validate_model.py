"""validate-model: refuse a model unless its metrics, tag, digest and interface all check out."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field

from serving.spec import BundleError, load_spec

from ..bundle import fetch_model, write_contents
from ..digests import json_digest, sha256_file
from ..errors import ConfigError, MlopsError, StageFailed, UsageError
from ..interface_check import breaking_changes, schema_of
from ..module_files import fetch_verified, mismatches
from ..settings import HOLDOUT_METRICS, Settings
from ..sources import ModelRef, get_source, parse_ref
from ..sources.metadata import ModelMetadata
from ..state import CheckRecord, DeploymentRecord, ModelRecord, State, ValidationRecord, now
from ..thresholds import parse
from ..trial import trial_run
from ..ui import progress
from .base import StageResult, stage


class ValidateResult(StageResult):
    model_ref: str
    sha256: str
    checks: list[CheckRecord]
    holdout: dict[str, float] = Field(default_factory=dict)
    written_back: str | None = None

    def lines(self) -> list[str]:
        out = [self.message] + [f"  ok  {c.name}: {c.detail}" for c in self.checks]
        return out + ([f"  verdict written back: {self.written_back}"] if self.written_back else [])


def _threshold_checks(meta: ModelMetadata, thresholds: dict[str, str]) -> list[CheckRecord]:
    checks = []
    for metric, condition in sorted(thresholds.items()):
        threshold = parse(condition, metric)
        value = meta.metrics.get(metric)
        if value is None:
            known = ", ".join(sorted(meta.metrics)) or "none"
            checks.append(
                CheckRecord(
                    name=f"metric {metric}",
                    passed=False,
                    detail=f"{metric} is not reported by the model's "
                    f"{'task or metadata' if meta._extras.get('task') else 'metadata'} "
                    f"(a threshold names it; reported: {known})",
                )
            )
        else:
            checks.append(
                CheckRecord(
                    name=f"metric {metric}",
                    passed=threshold.met_by(value),
                    detail=f"{metric} = {value:g}, needs {threshold}",
                )
            )
    return checks


def _require_thresholds(settings: Settings) -> None:
    """A model is checked against at least one metric threshold, unless that is explicitly waived."""
    v = settings.validation
    if not v.thresholds and not (v.holdout and v.holdout.thresholds) and not v.allow_no_thresholds:
        raise ConfigError(
            "no metric thresholds configured: a model would pass without any metric checked",
            hint='set validation.thresholds, e.g. {accuracy: ">= 0.9"}, or validation.allow_no_thresholds: true',
        )


def _schema_check(meta: ModelMetadata, state: State, allow_breaking: bool) -> CheckRecord | None:
    deployed = state.deployments.get("prod") or state.deployments.get("test")
    if deployed is None or meta.schema_ is None:  # (no schema: refused by _checks before this)
        return None
    problems = breaking_changes(
        schema_of(deployed.schema_, f"the {deployed.env} deployment's schema in state.json"), meta.schema_
    )
    where = f"{deployed.model_name}@{deployed.model_version} in {deployed.env}"
    if not problems:
        return CheckRecord(name="interface", passed=True, detail=f"compatible with {where}")
    detail = f"breaking change against {where}: " + "; ".join(problems)
    if allow_breaking:
        return CheckRecord(name="interface", passed=True, detail=detail + " (allowed by --allow-breaking)")
    return CheckRecord(name="interface", passed=False, detail=detail + " (pass --allow-breaking to accept)")


def metadata_digest(meta: ModelMetadata) -> str:
    """What validation saw of the metadata: assemble-server refuses metadata that changed since.

    Tags are left out: the pipeline itself writes the verdict and deployed:* tags back to the model."""
    return json_digest(meta.model_dump(mode="json", by_alias=True, exclude={"tags"}))


def _condition_checks(prefix: str, values: dict[str, float], thresholds: dict[str, str]) -> list[CheckRecord]:
    checks = []
    for metric, condition in sorted(thresholds.items()):
        threshold = parse(condition, metric)
        value = values[metric]
        checks.append(
            CheckRecord(
                name=f"{prefix} {metric}",
                passed=threshold.met_by(value),
                detail=f"{prefix} {metric} = {value:.4g}, needs {threshold}",
            )
        )
    return checks


def _holdout(meta: ModelMetadata, bundle: Path, settings: Settings) -> dict[str, float]:
    from ..holdout import evaluate

    holdout = settings.validation.holdout
    assert holdout is not None  # the caller runs this only when validation.holdout is configured
    wrong = sorted(set(holdout.thresholds) - set(HOLDOUT_METRICS[meta.task]))
    if wrong:
        raise ConfigError(
            f"validation.holdout.thresholds: {', '.join(wrong)} do not apply to a {meta.task} model "
            f"(its metrics: {', '.join(HOLDOUT_METRICS[meta.task])})"
        )
    progress(f"evaluating on holdout {holdout.path}")
    scores = evaluate(meta, bundle, settings)
    missing = sorted(set(holdout.thresholds) - set(scores))
    if missing:
        raise StageFailed(
            f"holdout {', '.join(missing)} cannot be computed for model {meta.name} "
            "(roc_auc needs predict_proba and at least two classes in the target)"
        )
    return scores


def _prod_meta(dep: DeploymentRecord) -> tuple[ModelMetadata, Path]:
    """The model now in prod, from its bundle's spec (read by serving.spec), and that bundle, its artifact
    digest-checked."""
    bundle = Path(dep.bundle_path)
    try:
        spec = load_spec(bundle)
    except BundleError as exc:
        raise StageFailed(
            f"the bundle of the model in prod ({dep.bundle_path}) is gone or unreadable: cannot "
            f"compare with it ({exc})",
            hint="remove validation.max_regression or deploy prod again",
        ) from None
    model = spec.model
    post = spec.module("postprocessing")
    meta = ModelMetadata(
        name=model.name,
        version=model.version,
        framework=model.framework,
        task=model.task,
        sha256=model.sha256,
        artifact_name=Path(model.artifact).name,
        schema=spec.io,
        labels=post.settings.get("labels") if post else None,
        class_name=model.class_name,
    )
    artifact = bundle / model.artifact
    if not artifact.is_file() or sha256_file(artifact) != dep.model_sha256:
        raise StageFailed(f"the artifact of the model in prod ({artifact}) is missing or altered")
    return meta, bundle


def _prod_in_source(settings: Settings, ref: ModelRef) -> ModelRef | None:
    """No prod in this workdir's state: the model its source tags as in prod (ClearML: deployed:prod), if any."""
    tag = settings.audit.deployed_tags.get("prod")
    if not tag:
        return None
    found = [r for r in get_source(ref.scheme, settings).tagged(tag)]
    if len(found) > 1:
        raise StageFailed(
            f"{len(found)} models carry the tag {tag!r} in {ref.scheme}: cannot tell which is in prod",
            hint=f"take {tag!r} off all but the model in prod",
        )
    return found[0] if found else None


def _regression_checks(
    meta: ModelMetadata, ref: ModelRef, holdout: dict[str, float], state: State, settings: Settings
) -> list[CheckRecord]:
    """Not worse than the model now in prod by more than the allowed drop, metric by metric."""
    from ..holdout import direction, evaluate

    limits = settings.validation.max_regression
    if not limits:
        return []
    declared = settings.validation.metric_directions
    unknown = sorted(m for m in limits if direction(m, declared) is None)
    if unknown:
        raise ConfigError(
            f"validation.max_regression: which way is better for {', '.join(unknown)} is not known",
            hint=f"declare it in validation.metric_directions, e.g. {{{unknown[0]!r}: lower}}",
        )
    prod = state.deployments.get("prod")
    theirs: dict[str, float] = {}
    if prod is None:
        found = _prod_in_source(settings, ref)
        if found is None:
            detail = "no model in prod yet: nothing to compare with"
            if settings.validation.allow_no_prod:
                return [CheckRecord(name="against prod", passed=True, detail=detail + " (allowed by allow_no_prod)")]
            return [
                CheckRecord(
                    name="against prod",
                    passed=False,
                    detail=detail + " (set validation.allow_no_prod to pass without one)",
                )
            ]
        if holdout:
            return [
                CheckRecord(
                    name="against prod",
                    passed=False,
                    detail=f"{found} is in prod by its {ref.scheme} tag, but not deployed from this workdir: "
                    "its holdout scores cannot be computed here",
                )
            ]
        where, kind = f"{found} in prod (by its tag)", "reported"
        theirs, ours = get_source(found.scheme, settings).fetch_metadata(found).metrics, meta.metrics
    elif holdout:
        where = f"{prod.model_ref} in prod"
        prod_meta, prod_bundle = _prod_meta(prod)
        progress(f"evaluating {where} on the same holdout")
        theirs, kind = evaluate(prod_meta, prod_bundle, settings), "holdout"
        ours = holdout
    else:
        where, kind, ours = f"{prod.model_ref} in prod", "reported", meta.metrics
        if prod.metrics is not None:
            theirs = prod.metrics  # what prod was validated with
        else:
            old = parse_ref(prod.model_ref)
            progress(f"the deployment record of prod has no metrics: reading those of {old} from its source now")
            theirs = get_source(old.scheme, settings).fetch_metadata(old).metrics
            where += " (metrics read from its source now: not recorded when it was deployed)"
    checks = []
    for metric, allowed in sorted(limits.items()):
        if metric not in ours or metric not in theirs:
            side = "this model" if metric not in ours else where
            checks.append(
                CheckRecord(
                    name=f"against prod {metric}",
                    passed=False,
                    detail=f"{kind} {metric} is not known for {side}: cannot compare",
                )
            )
            continue
        new, old_value = ours[metric], theirs[metric]
        lower = direction(metric, declared) == "lower"
        worse = (new - old_value) if lower else (old_value - new)
        checks.append(
            CheckRecord(
                name=f"against prod {metric}",
                passed=worse <= allowed + 1e-12,
                detail=f"{kind} {metric} = {new:.4g} vs {old_value:.4g} for {where} "
                f"({'lower' if lower else 'higher'} is better; "
                f"{'worse' if worse > 0 else 'not worse'} by {max(worse, 0):.4g}, "
                f"at most {allowed:g} allowed)",
            )
        )
    return checks


def _write_verdict(source: Any, ref: ModelRef, passed: bool, sha256: str | None, settings: Settings) -> str | None:
    """The verdict as a tag (and metadata) on the model in its source; a failure here is a warning only."""
    tags = settings.validation.verdict_tags
    mine, other = (tags.get("passed"), tags.get("failed")) if passed else (tags.get("failed"), tags.get("passed"))
    metadata = {"mlops.validation.verdict": "passed" if passed else "failed", "mlops.validation.at": now()}
    if sha256:
        metadata["mlops.validation.sha256"] = sha256
    try:
        done = source.write_back(
            ref, add_tags=[mine] if mine else [], remove_tags=[other] if other else [], metadata=metadata
        )
    except MlopsError as exc:
        progress(f"warning: could not write the verdict back to {ref}: {exc}")
        return None
    return f"tag {mine!r} on {ref}" if done and mine else None


def _checks(
    meta: ModelMetadata, source: Any, ref: ModelRef, state: State, settings: Settings, pinned: str
) -> tuple[list[CheckRecord], dict[str, float], str]:
    """Every check of the model; raises where one cannot be made at all."""
    if meta.schema_ is None:
        raise StageFailed(
            f"model {pinned} has no input/output schema in its metadata", hint="register it with --schema FILE"
        )
    checks: list[CheckRecord] = []
    progress(f"downloading artifact {meta.artifact_name}")
    scratch = settings.workdir / "artifacts"
    scratch.mkdir(parents=True, exist_ok=True)
    holdout: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        bundle = Path(tmp)  # laid out as assemble-server lays out the bundle
        _, actual = fetch_model(source, meta, bundle)
        checks.append(
            CheckRecord(
                name="artifact digest",
                passed=actual == meta.sha256,
                detail=f"sha256:{actual[:12]}"
                + (
                    ""
                    if actual == meta.sha256
                    else f" but metadata says sha256:{meta.sha256[:12]} (corrupt or altered artifact)"
                ),
            )
        )
        wrong: list[str] = []
        if meta.modules and meta.modules.files():
            progress(f"downloading {len(meta.modules.files())} module file(s)")
            fetched = fetch_verified(source, meta, bundle)
            wrong = mismatches(fetched)
            checks.append(
                CheckRecord(
                    name="module files",
                    passed=not wrong,
                    detail="; ".join(wrong) or ", ".join(f"{f.file} sha256:{a[:12]}" for f, _, a in fetched),
                )
            )
        # Only digest-checked files are ever loaded (unpickling runs code), and only in a child process.
        if actual == meta.sha256 and not wrong:
            write_contents(meta, settings, bundle)
            progress("loading the model as the server will and answering its examples (trial run)")
            trial = trial_run(bundle, settings, meta.framework)
            checks.append(trial)
            if settings.validation.holdout is not None and trial.passed:
                holdout = _holdout(meta, bundle, settings)
                checks += _condition_checks("holdout", holdout, settings.validation.holdout.thresholds)
    checks += _threshold_checks(meta, settings.validation.thresholds)
    tag = settings.validation.validator_tag
    if tag:
        checks.append(
            CheckRecord(
                name="validator tag",
                passed=tag in meta.tags,
                detail=f"tag {tag!r} "
                + (
                    "present"
                    if tag in meta.tags
                    else f"missing (add it at register time with --tag {tag}, or change validation.validator_tag)"
                ),
            )
        )
    interface = _schema_check(meta, state, settings.validation.allow_breaking)
    if interface is not None:
        checks.append(interface)
    if actual == meta.sha256:
        checks += _regression_checks(meta, ref, holdout, state, settings)

    return checks, holdout, actual


def junit_report(settings: Settings, model_ref: str, checks: list[CheckRecord]) -> None:
    """WORKDIR/reports/validate-model.xml: one JUnit test case per check, for the CI's test report."""
    from .. import junit

    junit.write(
        settings.workdir / "reports" / "validate-model.xml",
        f"validate-model {model_ref}",
        [
            junit.Case(name=c.name, classname="validate-model", detail=c.detail, failure=None if c.passed else c.detail)
            for c in checks
        ],
    )


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
    _require_thresholds(settings)
    pinned = str(ref.pinned(meta.version))
    try:
        checks, holdout, actual = _checks(meta, source, ref, state, settings, pinned)
    except MlopsError as exc:
        # a check that could not be made fails the model: no verdict written earlier may outlive this run
        _write_verdict(source, ref, False, None, settings)
        junit_report(settings, pinned, [CheckRecord(name="checks could be made", passed=False, detail=str(exc))])
        raise
    junit_report(settings, pinned, checks)
    passed = all(c.passed for c in checks)
    state.validation = ValidationRecord(
        passed=passed,
        model_ref=pinned,
        checks=checks,
        model_sha256=meta.sha256 if passed else None,
        metadata_sha256=metadata_digest(meta) if passed else None,
    )
    if passed:
        assert meta.schema_ is not None  # _checks refuses a model without one
        state.model = ModelRecord(
            ref=pinned,
            name=meta.name,
            version=meta.version,
            framework=meta.framework,
            task=meta.task,
            sha256=meta.sha256,
            artifact_name=meta.artifact_name,
            schema_=meta.schema_.model_dump(mode="json"),
            labels=meta.labels,
            class_name=meta.class_name,
            metrics=meta.metrics,
        )
        state.bundle = state.image = state.smoke = None
    state.save(settings.workdir)
    written = _write_verdict(source, ref, passed, actual, settings)
    if not passed:
        failed = "; ".join(c.detail for c in checks if not c.passed)
        raise StageFailed(f"model {pinned} failed validation: {failed}")
    return ValidateResult(
        stage="validate-model",
        model_ref=pinned,
        sha256=meta.sha256,
        checks=checks,
        holdout=holdout,
        written_back=written,
        message=f"{pinned} passed {len(checks)} checks, pinned at sha256:{meta.sha256[:12]}",
    )
