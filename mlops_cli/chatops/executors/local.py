"""The local executor: no Jenkins; the service runs the pipeline's `mlops <stage>` commands itself, each as
its own process as a Jenkins stage would (so a stage's crash never takes the service down), in its
workdir, one release at a time per workdir (an flock on `<workdir>/.chatops-release.lock`, which
also keeps out a second service on the same workdir), and posts each stage's outcome to the thread.
`to test` runs up to smoke-test. `to prod` runs up to smoke-test, then waits at the approval gate
(chatops.local.approval_gate): an Approve/Reject message in the thread, the pipeline's own Block Kit
(notifiers.slack.approval_blocks), answered through the app's interaction path (roles, four eyes,
one decision); approved -> rolling-update with --approved-by/--triggered-by; rejected or timed out
(chatops.local.approval_timeout_s) -> nothing deployed, recorded with `mlops approval`; the service
stopping -> nothing deployed. The thread ends with what serves and its digest. The stages get the service's
environment without its own secrets (MLOPS_CHATOPS__*).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ...notifiers.slack import approval_blocks, approval_value, parse_approval_value
from ...stages import STAGES
from ...state import State
from . import Approval, ExecutorError, Release, Say

if TYPE_CHECKING:
    from ...settings import Settings

ICONS = {"passed": ":white_check_mark:", "skipped": ":fast_forward:", "failed": ":x:"}
TEST_STAGES = STAGES[: STAGES.index("smoke-test") + 1]


GATE_JOB = "local"  # the approval button's "job": a release this service runs itself


@dataclass
class _Gate:
    """A release waiting at the approval gate; `decision` is (approve, Slack user) once answered."""

    number: int
    token: str  # in the button's input_id: a button of an earlier service run names no waiting release
    requested_by: str
    model: str
    digest: str
    woken: threading.Event = field(default_factory=threading.Event)
    decision: tuple[bool, str] | None = None


def _reason(err: str, code: int) -> str:
    return next(
        (ln[len("error: ") :] for ln in reversed(err.splitlines()) if ln.startswith("error: ")),
        _first_line(err) or f"exit code {code}",
    )


def _first_line(text: str, limit: int = 300) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


class LocalExecutor:
    name = "local"

    def __init__(self, settings: Settings, config_file: str | None = None):
        self.settings = settings
        self.workdir = Path(settings.chatops.local.workdir or settings.workdir).absolute()
        self.timeout_s = settings.chatops.local.stage_timeout_s
        self.config_file = config_file
        self.gate = settings.chatops.local.approval_gate
        self.approval_timeout_s = settings.chatops.local.approval_timeout_s
        self._gates: dict[int, _Gate] = {}
        self._gates_lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._stopping = threading.Event()

    def _env(self, release: Release) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_CHATOPS__")}
        env["MLOPS_WORKDIR"] = str(self.workdir)
        if release.model:
            env["MLOPS_MODEL"] = release.model
        if release.target:
            env["MLOPS_DEPLOY__TARGET"] = release.target
        return env

    def _mlops(self, args: list[str], release: Release) -> tuple[int, str, str]:
        argv = [sys.executable, "-m", "mlops_cli.cli", *args, "--json"]
        if self.config_file:
            argv += ["--config", str(self.config_file)]
        try:
            done = subprocess.run(
                argv,
                env=self._env(release),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return 124, "", f"error: gave up after {self.timeout_s:g}s"
        return done.returncode, done.stdout, done.stderr

    def _locked(self, say: Say):
        self.workdir.mkdir(parents=True, exist_ok=True)
        lock = open(self.workdir / ".chatops-release.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f":hourglass: another release runs in {self.workdir}; this one starts when it ends")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def _stage(self, index: int, total: int, stage: str, release: Release, say: Say, *extra: str) -> None:
        start = time.monotonic()
        code, out, err = self._mlops([stage, *extra], release)
        took = f"{time.monotonic() - start:.1f}s"
        if code != 0:
            say(f"{ICONS['failed']} [{index}/{total}] {stage} failed ({took}): {_reason(err, code)}")
            raise ExecutorError(f"the release stopped at {stage}: nothing after it ran")
        try:
            result = json.loads(out)
        except ValueError:
            result = {}
        status = result.get("status", "passed")
        detail = _first_line(result.get("message", ""))
        say(f"{ICONS.get(status, '')} [{index}/{total}] {stage} {status} ({took})" + (f": {detail}" if detail else ""))

    def deploy(self, release: Release, say: Say) -> None:
        stages = STAGES if release.env == "prod" else TEST_STAGES
        gated = release.env == "prod" and self.gate
        with self._locked(say):
            if release.env == "prod" and not self.gate:
                say(":warning: no approval gate (chatops.local.approval_gate: false): all seven stages run at once")
            for index, stage in enumerate(stages, start=1):
                extra: list[str] = []
                if stage == "rolling-update":
                    if gated:
                        approver = self._await_approval(release, say)
                        extra = ["--approved-by", f"slack:{approver}"]
                    extra += ["--triggered-by", release.requested_by]
                self._stage(index, len(stages), stage, release, say, *extra)
            say(self._serving(release.env))

    # --- the approval gate (to prod) ------------------------------------------------------------

    def _candidate(self, release: Release) -> tuple[str, str]:
        """The model and digest smoke-test passed: what production would get."""
        state = State.load(self.workdir)
        dep = state.deployments.get("test")
        model = dep.model_ref if dep else release.model
        if state.image is not None:
            return model, state.image.reference
        digest = dep.bundle_digest if dep else (state.bundle.bundle_digest if state.bundle else "")
        return model, f"bundle sha256:{digest}" if digest else ""

    def _await_approval(self, release: Release, say: Say) -> str:
        """Post Approve/Reject in the thread and wait (bounded) for the decision; the approver's Slack ID, or
        ExecutorError (rejected, timed out, the service stopping) with nothing deployed and the outcome recorded."""
        model, digest = self._candidate(release)
        gate = _Gate(next(self._numbers), secrets.token_hex(8), release.requested_by, model, digest)
        request = approval_value(
            GATE_JOB, gate.number, "", input_id=gate.token, requested_by=gate.requested_by, model=model, digest=digest
        )
        text = (
            f":raised_hand: Approve *{model}* to *prod*? digest `{digest}`, requested by <@{release.user}> "
            f"(local release #{gate.number}; waits {self.approval_timeout_s:g}s)"
        )
        blocks = [{"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": text}}]
        stopped = ExecutorError("the service stopped while waiting for approval: nothing was deployed to prod")
        with self._gates_lock:  # close() sets _stopping first, then wakes what it finds here: no gate missed
            if self._stopping.is_set():
                raise stopped
            self._gates[gate.number] = gate
        try:
            say(text, blocks=blocks + approval_blocks(request))
            gate.woken.wait(self.approval_timeout_s)
        finally:
            with self._gates_lock:  # from here on a click finds the release finished
                self._gates.pop(gate.number, None)
                decision = gate.decision
        if self._stopping.is_set():  # even when approved just now: no rolling update in a stopping service
            raise stopped
        if decision is not None and decision[0]:
            say(f":white_check_mark: approved by <@{decision[1]}>: rolling-update runs")
            return decision[1]
        if decision is not None:
            self._record("rejected", f"slack:{decision[1]}", release)
            raise ExecutorError(f"rejected by <@{decision[1]}>: nothing was deployed to prod")
        self._record("timed-out", None, release)
        raise ExecutorError(f"no decision within {self.approval_timeout_s:g}s: nothing was deployed to prod")

    def _record(self, decision: str, by: str | None, release: Release) -> None:
        """The gate's outcome in state.json (`mlops approval`); a failure to record it is said in the thread."""
        args = ["approval", "--decision", decision, "--triggered-by", release.requested_by]
        code, _, err = self._mlops(args + (["--by", by] if by else []), release)
        if code != 0:
            raise ExecutorError(f"{decision}, nothing deployed, but not recorded in state: {_reason(err, code)}")

    def close(self) -> None:
        """The service stops: every release waiting for approval ends, deploying nothing."""
        self._stopping.set()
        with self._gates_lock:
            for gate in self._gates.values():
                gate.woken.set()

    def _serving(self, env: str) -> str:
        state = State.load(self.workdir)
        dep = state.deployments.get(env)
        if dep is None:
            return f":warning: the stages passed but nothing is recorded as serving in {env}"
        digest = dep.image or (state.image.reference if state.image else f"bundle sha256:{dep.bundle_digest}")
        return (
            f":tada: {env} serves `{dep.model_ref}` ({dep.model_name} version {dep.model_version}) at "
            f"{dep.url}, revision {dep.revision}, digest `{digest}`"
        )

    def rollback(self, release: Release, say: Say) -> None:
        with self._locked(say):
            code, out, err = self._mlops(["rollback", "--env", release.env], release)
        if code != 0:
            reason = next(
                (ln[len("error: ") :] for ln in reversed(err.splitlines()) if ln.startswith("error: ")),
                f"exit code {code}",
            )
            raise ExecutorError(f"rollback of {release.env} failed: {reason}")
        try:
            detail = _first_line(json.loads(out).get("message", ""))
        except (ValueError, AttributeError):
            detail = ""
        say(f":rewind: {release.env} rolled back" + (f": {detail}" if detail else ""))

    def _waiting(self, approval: Approval) -> _Gate:
        gate = self._gates.get(approval.build)
        if gate is None or gate.token != approval.input_id:
            raise ExecutorError(f"local release #{approval.build} is not waiting for approval (finished or unknown)")
        return gate

    def approval(self, value: str) -> Approval:
        try:
            data = parse_approval_value(value)
        except ValueError as exc:
            raise ExecutorError(str(exc)) from None
        if data["job"] != GATE_JOB:
            raise ExecutorError(f"the button names the job {data['job']!r}; this service runs releases locally")
        approval = Approval(
            job=GATE_JOB,
            build=data["build"],
            build_url="",
            input_id=str(data["input_id"]),
            requested_by=str(data.get("requested_by") or ""),
            model=str(data.get("model") or ""),
            digest=str(data.get("digest") or ""),
        )
        with self._gates_lock:
            gate = self._waiting(approval)
        # who asked and what is to be deployed: as this service recorded them, the button's word only a hint
        return replace(approval, requested_by=gate.requested_by, model=gate.model, digest=gate.digest)

    def requester(self, approval: Approval) -> str:
        with self._gates_lock:
            return self._waiting(approval).requested_by

    def decide(self, approval: Approval, approve: bool, user: str) -> None:
        with self._gates_lock:
            gate = self._waiting(approval)
            if gate.decision is not None:
                raise ExecutorError(f"local release #{gate.number} is decided already")
            gate.decision = (approve, user)
            gate.woken.set()
