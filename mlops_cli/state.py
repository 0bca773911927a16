"""The pipeline state file `<workdir>/state.json`: what stages hand to one another.

Jenkins runs each stage as a separate process, so everything a later stage needs is here.
It is written atomically (temp file + os.replace): a killed stage never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .digests import tree_digest
from .errors import ConfigError, PrerequisiteError

STATE_FILE = "state.json"
STATE_VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModelRecord(Record):
    ref: str
    name: str
    version: str
    framework: str
    task: str
    sha256: str
    artifact_name: str
    schema_: dict[str, Any] = Field(alias="schema")
    labels: list[Any] | None = None
    class_name: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CheckRecord(Record):
    name: str
    passed: bool
    detail: str


class ValidationRecord(Record):
    passed: bool
    model_ref: str
    model_sha256: str | None = None
    metadata_sha256: str | None = None
    checks: list[CheckRecord] = Field(default_factory=list)
    at: str = Field(default_factory=now)


class BundleRecord(Record):
    path: str
    model_sha256: str
    bundle_digest: str
    at: str = Field(default_factory=now)


class ImageRecord(Record):
    reference: str  # repository@sha256:...: what later stages deploy, never a tag
    repository: str
    tag: str
    digest: str
    builder: str
    bundle_digest: str
    at: str = Field(default_factory=now)


class DeploymentRecord(Record):
    env: str
    target: str
    url: str
    model_ref: str
    model_name: str
    model_version: str
    model_sha256: str
    bundle_digest: str
    bundle_path: str
    schema_: dict[str, Any] = Field(alias="schema")
    revision: int
    previous_revision: int | None = None
    pid: int | None = None
    log_path: str | None = None
    handle: str | None = None
    image: str | None = None
    at: str = Field(default_factory=now)
    metrics: dict[str, float] | None = None  # the reported metrics the model was validated with

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SmokeRecord(Record):
    passed: bool
    url: str
    model_sha256: str
    bundle_digest: str
    requests: int
    p95_ms: float
    problems: list[str] = Field(default_factory=list)
    at: str = Field(default_factory=now)


class AuditRecord(Record):
    """A deployment as the audit trail keeps it: what was deployed where, since when, and the write-back."""

    env: str
    model_ref: str
    model_sha256: str
    digest: str  # the image reference (repository@sha256:...) or the bundle's sha256
    target: str
    tag: str | None = None
    written_back: bool = False
    detail: str = ""
    at: str = Field(default_factory=now)
    triggered_by: str | None = None  # who asked for it, e.g. "slack:U123 via chatops-bot" (a Jenkins user ID)
    approved_by: str | None = None  # who passed the approval gate, e.g. "alice" or "slack:U456 via chatops-bot"
    build_url: str | None = None  # the CI build that did it


class ApprovalRecord(Record):
    """A decision at the approval gate before production: approved, rejected or timed out (not deployed)."""

    decision: Literal["approved", "rejected", "timed-out"]
    by: str | None = None  # who decided (none for a timeout)
    triggered_by: str | None = None
    model_ref: str | None = None
    digest: str | None = None  # what was to be deployed: image reference or bundle sha256
    build_url: str | None = None
    at: str = Field(default_factory=now)


class RolloutRecord(Record):
    """The last rolling update or rollback of an environment: which revisions, and how it ended."""

    env: str
    outcome: Literal["succeeded", "rolled-back", "failed"]
    from_revision: int | None = None  # what served before
    to_revision: int | None = None  # what serves now (after a rollback: the restored one's new number)
    failed_revision: int | None = None
    image: str | None = None  # the image that serves now
    previous_image: str | None = None
    message: str = ""
    at: str = Field(default_factory=now)


class IntentRecord(Record):
    """The journal: a change to an environment in progress, written before production changes and

    cleared once the outcome is recorded. Found by the next run (after a kill -9), it says what
    to finish or undo: the new revision's identity, the step it had reached, what serves before.
    """

    env: str
    action: str  # deploy-test / rolling-update
    step: str  # starting / loading / switching / draining
    revision: int
    port: int | None = None
    instance: str | None = None  # the new server's identity token (local: its --instance)
    pid: int | None = None  # the new server's process, once started
    previous_handle: str | None = None
    previous_pid: int | None = None
    holder_pid: int = Field(default_factory=os.getpid)
    record: DeploymentRecord | None = None  # what state names once the new revision serves
    at: str = Field(default_factory=now)


class CanaryStepRecord(Record):
    """One step of a canary release: what it was, how it ended, and the analysis' measurements if any."""

    index: int
    step: str  # "set_weight 10", "pause 60s", "analysis default"
    outcome: Literal["pending", "running", "done", "pass", "fail", "inconclusive", "skipped"] = "pending"
    weight: int | None = None  # the canary's share once the step was taken
    analysis: dict[str, Any] | None = None  # AnalysisResult.to_dict(): verdict, reason, measurements
    attempts: int = 0
    detail: str = ""
    started_at: str | None = None
    ended_at: str | None = None


class CanaryRecord(Record):
    """The last canary release of an environment: its steps as they went, and how it ended."""

    env: str
    status: Literal["starting", "running", "promoting", "aborting", "promoted", "aborted", "failed"] = "starting"
    from_revision: int | None = None
    to_revision: int | None = None
    model_ref: str | None = None
    url: str | None = None
    weight: int = 0
    stable: dict[str, Any] | None = None  # CanaryMember as a dict: url, metrics_url, selector, revision, handle
    canary: dict[str, Any] | None = None
    steps: list[CanaryStepRecord] = Field(default_factory=list)
    current_step: int | None = None
    reason: str = ""
    holder_pid: int = Field(default_factory=os.getpid)
    started_at: str = Field(default_factory=now)
    ended_at: str | None = None


class StageRecord(Record):
    status: Literal["passed", "failed", "skipped"]
    started_at: str
    duration_s: float = 0.0
    message: str = ""


class State(Record):
    version: int = STATE_VERSION
    model: ModelRecord | None = None
    validation: ValidationRecord | None = None
    bundle: BundleRecord | None = None
    image: ImageRecord | None = None
    deployments: dict[str, DeploymentRecord] = Field(default_factory=dict)
    smoke: SmokeRecord | None = None
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    audit: list[AuditRecord] = Field(default_factory=list)
    previous_deployments: dict[str, DeploymentRecord] = Field(default_factory=dict)
    rollouts: dict[str, RolloutRecord] = Field(default_factory=dict)
    intents: dict[str, IntentRecord] = Field(default_factory=dict)  # the journal: changes in progress
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    canaries: dict[str, CanaryRecord] = Field(default_factory=dict)  # the last canary release per env

    @staticmethod
    def path(workdir: Path) -> Path:
        return Path(workdir) / STATE_FILE

    @classmethod
    def load(cls, workdir: Path) -> State:
        path = cls.path(workdir)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        try:
            return cls.model_validate(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(
                f"state file {path} is not valid ({type(exc).__name__})",
                hint="move it aside and run the pipeline again from validate-model",
            ) from exc

    def save(self, workdir: Path) -> None:
        path = self.path(workdir)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # What a stage needs from the ones before it; each says which stage to run first.
    def require_validated(self) -> tuple[ModelRecord, ValidationRecord]:
        if self.model is None or self.validation is None:
            raise PrerequisiteError("no validated model in state", hint="run `mlops validate-model --model REF` first")
        if not self.validation.passed or self.validation.model_sha256 != self.model.sha256:
            raise PrerequisiteError(
                f"model {self.validation.model_ref} did not pass validation",
                hint="fix it and run `mlops validate-model` again",
            )
        return self.model, self.validation

    def require_bundle(self) -> BundleRecord:
        from serving.spec import SPEC_FILE  # here, not at the top: most stages never import the spec's models

        model, _ = self.require_validated()
        if self.bundle is None or self.bundle.model_sha256 != model.sha256:
            raise PrerequisiteError(
                "no server bundle for the validated model", hint="run `mlops assemble-server` first"
            )
        if not (Path(self.bundle.path) / SPEC_FILE).is_file():
            raise PrerequisiteError(f"bundle {self.bundle.path} is gone", hint="run `mlops assemble-server` again")
        if tree_digest(Path(self.bundle.path)) != self.bundle.bundle_digest:
            raise PrerequisiteError(
                f"bundle {self.bundle.path} changed since it was assembled", hint="run `mlops assemble-server` again"
            )
        return self.bundle

    def require_image(self) -> ImageRecord:
        bundle = self.require_bundle()
        if self.image is None or self.image.bundle_digest != bundle.bundle_digest:
            raise PrerequisiteError("no image of the current bundle", hint="run `mlops build-image` first")
        return self.image

    def require_deployment(self, env: str, stage: str) -> DeploymentRecord:
        bundle = self.require_bundle()
        dep = self.deployments.get(env)
        if dep is None or dep.bundle_digest != bundle.bundle_digest:
            raise PrerequisiteError(f"the current bundle is not deployed to {env}", hint=f"run `mlops {stage}` first")
        return dep

    def require_smoke_passed(self) -> SmokeRecord:
        bundle = self.require_bundle()
        smoke = self.smoke
        if smoke is None or smoke.bundle_digest != bundle.bundle_digest:
            raise PrerequisiteError("the current bundle has not been smoke-tested", hint="run `mlops smoke-test` first")
        if not smoke.passed:
            raise PrerequisiteError(
                "the smoke test of the current bundle failed", hint="fix it and run `mlops smoke-test` again"
            )
        return smoke
