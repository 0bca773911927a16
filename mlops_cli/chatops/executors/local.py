"""The local executor: no Jenkins; the service runs the pipeline's `mlops <stage>` commands itself, each as
its own process as a Jenkins stage would (so a stage's crash never takes the service down), in its
workdir, one release at a time per workdir (an flock on `<workdir>/.chatops-release.lock`, which
also keeps out a second service on the same workdir), and posts each stage's outcome to the thread.
`to test` runs up to smoke-test; `to prod` all seven stages. The thread ends with what serves and
its digest. The stages get the service's environment without its own secrets (MLOPS_CHATOPS__*).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ...stages import STAGES
from ...state import State
from . import Approval, ExecutorError, Release, Say

if TYPE_CHECKING:
    from ...settings import Settings

ICONS = {"passed": ":white_check_mark:", "skipped": ":fast_forward:", "failed": ":x:"}
TEST_STAGES = STAGES[: STAGES.index("smoke-test") + 1]


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

    def deploy(self, release: Release, say: Say) -> None:
        stages = STAGES if release.env == "prod" else TEST_STAGES
        with self._locked(say):
            for index, stage in enumerate(stages, start=1):
                start = time.monotonic()
                code, out, err = self._mlops([stage], release)
                took = f"{time.monotonic() - start:.1f}s"
                if code != 0:
                    reason = next(
                        (ln[len("error: ") :] for ln in reversed(err.splitlines()) if ln.startswith("error: ")),
                        _first_line(err) or f"exit code {code}",
                    )
                    say(f"{ICONS['failed']} [{index}/{len(stages)}] {stage} failed ({took}): {reason}")
                    raise ExecutorError(f"the release stopped at {stage}: nothing after it ran")
                try:
                    result = json.loads(out)
                except ValueError:
                    result = {}
                status = result.get("status", "passed")
                detail = _first_line(result.get("message", ""))
                say(
                    f"{ICONS.get(status, '')} [{index}/{len(stages)}] {stage} {status} ({took})"
                    + (f": {detail}" if detail else "")
                )
            say(self._serving(release.env))

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

    def approval(self, value: str) -> Approval:
        raise ExecutorError(
            "this service runs releases locally (chatops.executor: local): there is no approval gate to answer"
        )

    def requester(self, approval: Approval) -> str:
        raise ExecutorError("no approval gate with the local executor")

    def decide(self, approval: Approval, approve: bool, user: str) -> None:
        raise ExecutorError("no approval gate with the local executor")
