"""The canary engine: `mlops rolling-update` with `rollout.strategy: canary` runs `rollout.steps`.

canary_start (the new revision beside the current one, weight 0), then each step in order —
set_weight, pause, analysis (`mlops_cli.canary.analysis.run_analysis`, or the `analyse` given) —
then promotion (100 %, the old revision removed). A failed analysis aborts: weight 0, the canary
removed, stable keeps serving, and the stage fails (exit 1) with the reason in one line. An
inconclusive one is handled as `canary_analysis.on_inconclusive` says: `pause` (wait
rollout.analysis_retry_s and measure again, up to `inconclusive_retries` times, then abort),
`abort`, or `proceed`.

Every step is journaled before it is taken (`state.intents[env]`, action "canary") and recorded
after (`state.canaries[env]`: each step's measurements and verdict), and told to the notifiers
(in the Slack thread SLACK_THREAD_TS when the CI gives one). An interrupted canary (kill -9, a lost
agent) is reconciled by the next stage that touches env (`reconcile_canary`): finished if its
promotion had already handed the port to the new revision, otherwise undone — abort, stable serves.
`mlops canary promote|abort` from another process reach a waiting engine through a request file
it polls (`request`), since the engine holds the workdir lock.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from ..config import Settings
from ..errors import MlopsError, StageFailed
from ..state import CanaryRecord, CanaryStepRecord, DeploymentRecord, IntentRecord, RolloutRecord, State, now
from ..targets import Canary, Release, Rollout, pause_at
from ..ui import progress
from .steps import describe

Analyse = Callable[..., Any]  # (settings, template, canary, *, window_s, sleep) -> AnalysisResult
ACTION = "canary"
POLL_S = 0.25


class Requested(Exception):
    """A human asked (`mlops canary promote|abort`) while the engine waited."""

    def __init__(self, action: str, by: str):
        super().__init__(action)
        self.action, self.by = action, by


def default_analyse(
    settings: Settings, template: str, canary: Canary, *, window_s: float, sleep: Callable[[float], None] = time.sleep
) -> Any:
    from .analysis import run_analysis  # imported when used: `mlops --help` stays light

    return run_analysis(settings, template, canary, window_s=window_s, sleep=sleep)


def inconclusive_policy(settings: Settings) -> tuple[str, int]:
    """(canary_analysis.on_inconclusive, canary_analysis.inconclusive_retries)."""
    return settings.canary_analysis.on_inconclusive, settings.canary_analysis.inconclusive_retries


# --- requests from other processes ---


def request_path(workdir: Path, env: str) -> Path:
    return Path(workdir) / "canary-requests" / f"{env}.json"


def request(workdir: Path, env: str, action: str) -> None:
    """Ask the engine that runs env's canary to `promote` or `abort` (written atomically)."""
    path = request_path(workdir, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"action": action, "by": f"pid {os.getpid()}", "at": now()}) + "\n")
    os.replace(tmp, path)


def take_request(workdir: Path, env: str) -> tuple[str, str] | None:
    path = request_path(workdir, env)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    path.unlink(missing_ok=True)
    action = data.get("action") if isinstance(data, dict) else None
    return (action, str(data.get("by") or "someone")) if action in ("promote", "abort") else None


# --- record and tell ---


def _tell(
    settings: Settings,
    state: State,
    env: str,
    title: str,
    text: str,
    severity: Literal["info", "success", "warning", "critical"],
    rec: CanaryRecord,
    step: CanaryStepRecord | None = None,
) -> None:
    from ..notifiers import Notification, notify

    fields = {
        "environment": env,
        "canary": str(rec.to_revision),
        "stable": str(rec.from_revision),
        "weight": f"{rec.weight} %",
    }
    if rec.model_ref:
        fields["model"] = rec.model_ref
    if step is not None and step.analysis:
        for m in step.analysis.get("measurements", [])[:6]:
            fields[str(m.get("metric"))] = f"{m.get('outcome')}: {m.get('detail', '')}"[:150]
    note = Notification(
        title=title,
        text=text,
        severity=severity,
        kind="canary",
        fields=fields,
        link=os.environ.get("BUILD_URL") or None,
        channel=os.environ.get("SLACK_CHANNEL") or None,
        thread_ts=os.environ.get("SLACK_THREAD_TS") or None,
        event={
            "action": "canary",
            "title": title,
            "canary": rec.model_dump(mode="json"),
            "step": step.model_dump(mode="json") if step is not None else None,
        },
    )
    for delivery in notify(settings, note):
        if not delivery.delivered:
            progress(f"warning: could not notify {delivery.notifier}: {delivery.error}")


def _members(rec: CanaryRecord, canary: Canary) -> None:
    rec.url, rec.weight = canary.url, canary.weight
    rec.stable, rec.canary = asdict(canary.stable), asdict(canary.canary)


class Engine:
    """One canary release of env: runs the steps, journals before, records after."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        env: str,
        target: Any,
        *,
        analyse: Analyse | None = None,
        sleep: Callable[[float], None] = time.sleep,
        image: str | None = None,
    ):
        from ..deploying import deployment_record

        self.settings, self.state, self.env, self.target = settings, state, env, target
        self.analyse = analyse or default_analyse
        self._sleep = sleep
        self.current: DeploymentRecord = state.deployments[env]
        self.image = image
        self.to_revision = self.current.revision + 1
        self.new_record = deployment_record(
            settings,
            state,
            env,
            Rollout(url=self.current.url, revision=self.to_revision, previous_revision=self.current.revision),
            image,
        )
        steps = [CanaryStepRecord(index=i + 1, step=describe(s)) for i, s in enumerate(settings.rollout.steps)]
        self.rec = CanaryRecord(
            env=env,
            from_revision=self.current.revision,
            to_revision=self.to_revision,
            model_ref=state.model.ref if state.model else None,
            steps=steps,
        )
        state.canaries[env] = self.rec
        self.weight_since = time.monotonic()
        request_path(settings.workdir, env).unlink(missing_ok=True)  # an old request is no order for this run

    # the journal a target reports through, and the engine's own steps
    def journal(self, step: str, **fields: Any) -> None:
        known = self.state.intents.get(self.env)
        data = (
            known.model_dump(by_alias=True)
            if known
            else {
                "env": self.env,
                "action": ACTION,
                "revision": self.to_revision,
                "previous_pid": self.current.pid,
                "previous_handle": self.current.handle,
                "record": self.new_record.model_dump(by_alias=True),
            }
        )
        data.update({k: v for k, v in fields.items() if k in IntentRecord.model_fields}, step=step, at=now())
        self.state.intents[self.env] = IntentRecord.model_validate(data)
        self.state.save(self.settings.workdir)
        pause_at(step)

    def save(self) -> None:
        self.state.canaries[self.env] = self.rec
        self.state.save(self.settings.workdir)

    def wait(self, seconds: float | None) -> None:
        """Sleep `seconds` (None: until promoted), polling for a request; Requested when one comes."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            asked = take_request(self.settings.workdir, self.env)
            if asked:
                raise Requested(*asked)
            left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if left > 0:
                self._sleep(left)

    def run(self) -> DeploymentRecord:
        release = Release(bundle=Path(self.state.require_bundle().path), image=self.image, state=self.state)
        progress(
            f"canary of revision {self.to_revision} beside revision {self.current.revision} in {self.env}: "
            + ", ".join(s.step for s in self.rec.steps)
            + ", then promote"
        )
        self.save()
        try:
            canary = self.target.canary_start(self.env, release, self.current, self.journal)
        except StageFailed as exc:
            self._end("failed", f"the canary did not start: {exc.message}")
            self.state.intents.pop(self.env, None)
            self.state.rollouts[self.env] = RolloutRecord(
                env=self.env,
                outcome="failed",
                from_revision=self.current.revision,
                failed_revision=self.to_revision,
                previous_image=self.current.image,
                message=self.rec.reason,
            )
            self.save()
            _tell(
                self.settings,
                self.state,
                self.env,
                f"canary of {self.rec.model_ref} did not start in {self.env}",
                f"{exc.message}; revision {self.current.revision} serves",
                "critical",
                self.rec,
            )
            raise StageFailed(
                f"canary did not start, revision {self.current.revision} still serves: {exc.message}", hint=exc.hint
            ) from exc
        except BaseException:  # an abort while starting: undo now (the target cleaned up what it started)
            self._repair("aborted while starting")
            raise
        self.rec.status = "running"
        _members(self.rec, canary)
        self.save()
        _tell(
            self.settings,
            self.state,
            self.env,
            f"canary of {self.rec.model_ref} started in {self.env}",
            f"revision {self.to_revision} beside revision {self.current.revision} at {canary.url}",
            "info",
            self.rec,
        )
        try:
            canary = self._steps(canary)
        except Requested as asked:
            if asked.action == "abort":
                return self._abort(canary, f"aborted by request ({asked.by})")
            progress(f"promotion requested ({asked.by}): skipping the remaining steps")
            for step in self.rec.steps:
                if step.outcome == "pending":
                    step.outcome, step.detail = "skipped", f"promoted by request ({asked.by})"
        except _Abort as stop:
            return self._abort(canary, stop.reason)
        except BaseException:
            self._repair("aborted")
            raise
        return self._promote(canary)

    def _steps(self, canary: Canary) -> Canary:
        for step, spec in zip(self.rec.steps, self.settings.rollout.steps):
            ((kind, value),) = spec.items()
            self.rec.current_step, step.outcome, step.started_at = step.index, "running", now()
            self.save()
            asked = take_request(self.settings.workdir, self.env)
            if asked:
                raise Requested(*asked)
            if kind == "set_weight":
                canary = self.target.canary_set_weight(canary, value, self.journal)
                self.weight_since = time.monotonic()
                self.rec.weight, step.outcome, step.weight = value, "done", value
                progress(f"step {step.index}: {value} % of new requests to the canary")
            elif kind == "pause":
                progress(
                    f"step {step.index}: "
                    + ("paused until `mlops canary promote`" if value is None else f"pause {value:g} s")
                )
                self.journal(f"pause-{step.index}")
                self.wait(value)
                step.outcome, step.weight = "done", self.rec.weight
            else:
                self._analysis(canary, step, value)
            step.ended_at = now()
            self.save()
            if kind != "pause":
                _tell(
                    self.settings,
                    self.state,
                    self.env,
                    f"canary step {step.index}/{len(self.rec.steps)} in {self.env}: {step.step}: {step.outcome}",
                    step.detail or f"{self.rec.weight} % to revision {self.to_revision}",
                    "info",
                    self.rec,
                    step,
                )
        return canary

    def _analysis(self, canary: Canary, step: CanaryStepRecord, template: str) -> None:
        mode, retries = inconclusive_policy(self.settings)
        self.journal(f"analysis-{step.index}")
        while True:
            step.attempts += 1
            window = max(1.0, time.monotonic() - self.weight_since)
            progress(f"step {step.index}: analysis {template!r} over the last {window:.0f} s (attempt {step.attempts})")

            def sleep(seconds: float) -> None:  # a request interrupts the analysis' own waits too
                self.wait(seconds)

            result = self.analyse(self.settings, template, canary, window_s=window, sleep=sleep)
            step.analysis, step.outcome = result.to_dict(), result.verdict
            step.detail = f"{result.verdict}: {result.reason}"
            self.save()
            progress(f"step {step.index}: analysis {result.verdict}: {result.reason}")
            if result.verdict == "pass":
                return
            if result.verdict == "fail":
                raise _Abort(f"analysis {template!r} failed at {self.rec.weight} %: {result.reason}")
            # inconclusive
            if mode == "proceed":
                step.detail += " (canary_analysis.on_inconclusive proceed)"
                return
            if mode == "abort" or step.attempts > retries:
                why = (
                    "canary_analysis.on_inconclusive abort"
                    if mode == "abort"
                    else f"still inconclusive after {retries} retries (canary_analysis.inconclusive_retries)"
                )
                raise _Abort(f"analysis {template!r} inconclusive at {self.rec.weight} %: {result.reason} ({why})")
            _tell(
                self.settings,
                self.state,
                self.env,
                f"canary step {step.index} in {self.env}: analysis inconclusive, retrying in "
                f"{self.settings.rollout.analysis_retry_s:g} s",
                result.reason,
                "warning",
                self.rec,
                step,
            )
            self.wait(self.settings.rollout.analysis_retry_s)

    def _promote(self, canary: Canary) -> DeploymentRecord:
        self.rec.status = "promoting"
        self.save()
        self.journal("promoting")
        rollout = self.target.canary_promote(canary, self.journal)
        record = self.new_record.model_copy(
            update={
                "url": rollout.url,
                "revision": rollout.revision,
                "previous_revision": self.current.revision,
                "pid": rollout.pid,
                "log_path": rollout.log_path,
                "handle": rollout.handle,
                "image": rollout.image or self.image,
                "at": now(),
            }
        )
        self.state.previous_deployments[self.env] = self.current
        self.state.deployments[self.env] = record
        self.rec.weight = 100
        self._end(
            "promoted",
            f"revision {self.to_revision} promoted to 100 % after "
            f"{len(self.rec.steps)} steps; revision {self.current.revision} removed",
        )
        self.state.rollouts[self.env] = RolloutRecord(
            env=self.env,
            outcome="succeeded",
            from_revision=self.current.revision,
            to_revision=rollout.revision,
            image=record.image,
            previous_image=self.current.image,
            message=f"canary: {self.rec.reason}",
        )
        self.state.intents.pop(self.env, None)
        self.save()
        _tell(
            self.settings,
            self.state,
            self.env,
            f"canary of {self.rec.model_ref} promoted in {self.env}",
            self.rec.reason,
            "success",
            self.rec,
        )
        return record

    def _abort(self, canary: Canary, reason: str) -> DeploymentRecord:
        from ..reconcile import shielded

        progress(f"aborting the canary: {reason}")
        self.rec.status = "aborting"
        self.save()
        with shielded():
            self.journal("aborting")
            restored = self.target.canary_abort(canary, self.journal)
            record_abort(self.state, self.env, self.rec, restored, reason)
            self.save()
        _tell(
            self.settings,
            self.state,
            self.env,
            f"canary of {self.rec.model_ref} aborted in {self.env}",
            f"{reason}; revision {self.current.revision} serves",
            "critical",
            self.rec,
        )
        raise StageFailed(f"canary aborted, revision {self.current.revision} still serves: {reason}")

    def _repair(self, why: str) -> None:
        """An abort (SIGTERM/SIGINT) or a bug part-way: undo from the journal now, as reconcile would."""
        from ..reconcile import shielded

        with shielded():
            try:
                reconcile_canary(self.settings, self.state, self.env, self.target, why=why)
            except MlopsError as exc:
                progress(f"could not repair {self.env} now ({exc.message}); the next run of a stage will")

    def _end(self, status: str, reason: str) -> None:
        self.rec.status, self.rec.reason, self.rec.ended_at = status, reason, now()  # type: ignore[assignment]


class _Abort(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def record_abort(state: State, env: str, rec: CanaryRecord, restored: Rollout | None, reason: str) -> None:
    """State after an abort: stable serves (with its new identity when the target restarted it)."""
    current = state.deployments.get(env)
    if restored is not None and current is not None:
        state.deployments[env] = current.model_copy(
            update={
                "pid": restored.pid,
                "handle": restored.handle,
                "log_path": restored.log_path or current.log_path,
                "url": restored.url,
                "at": now(),
            }
        )
    rec.status, rec.reason, rec.ended_at, rec.weight = "aborted", reason, now(), 0
    state.canaries[env] = rec
    state.rollouts[env] = RolloutRecord(
        env=env,
        outcome="rolled-back",
        from_revision=rec.from_revision,
        to_revision=rec.from_revision,
        failed_revision=rec.to_revision,
        image=current.image if current else None,
        previous_image=current.image if current else None,
        message=f"canary aborted: {reason}",
    )
    state.intents.pop(env, None)


def reconcile_canary(
    settings: Settings, state: State, env: str, target: Any, *, why: str = "found interrupted", promote: bool = False
) -> str | None:
    """Finish or undo an interrupted canary of env (or, with promote, finish it on request); save; one line."""
    intent = state.intents.get(env)
    intent = intent if intent is not None and intent.action == ACTION else None
    current = state.deployments.get(env)
    canary = target.canary_observe(env, current)
    if intent is None and canary is None:
        return None
    rec = state.canaries.get(env) or CanaryRecord(
        env=env, from_revision=current.revision if current else None, to_revision=intent.revision if intent else None
    )
    step = intent.step if intent else "unknown"
    what = f"{why} canary of revision {rec.to_revision} (at step {step})"

    def journal(name: str, **fields: Any) -> None:
        if intent is not None:
            state.intents[env] = state.intents[env].model_copy(
                update={
                    **{k: v for k, v in fields.items() if k in IntentRecord.model_fields},
                    "step": name,
                    "at": now(),
                }
            )
            state.save(settings.workdir)

    handed_over = (
        intent is not None
        and step.startswith("promote-")
        and getattr(target, "final_answers", None)
        and target.final_answers(env)
    )
    from ..outcomes import announce

    if canary is not None and (promote or handed_over) and intent is not None and intent.record is not None:
        rollout = target.canary_promote(canary, journal)
        record = intent.record.model_copy(
            update={
                "pid": rollout.pid,
                "handle": rollout.handle,
                "url": rollout.url,
                "log_path": rollout.log_path,
                "revision": rollout.revision,
                "previous_revision": current.revision if current else None,
                "at": now(),
            }
        )
        if current is not None:
            state.previous_deployments[env] = current
        state.deployments[env] = record
        message = f"{what}: finished, revision {rollout.revision} promoted and serves"
        rec.status, rec.reason, rec.ended_at, rec.weight = "promoted", message, now(), 100
        outcome = RolloutRecord(
            env=env,
            outcome="succeeded",
            from_revision=current.revision if current else None,
            to_revision=rollout.revision,
            image=record.image,
            previous_image=current.image if current else None,
            message=message,
        )
    else:
        restored = target.canary_abort(canary, journal) if canary is not None else None
        serving = current is not None and (restored is not None or target.is_running(current))
        message = (
            f"{what}: undone, revision {current.revision} serves"
            if serving and current
            else f"{what}: undone, and no earlier revision is running"
        )
        record_abort(state, env, rec, restored, message)
        outcome = state.rollouts[env]
        if not serving:
            outcome = outcome.model_copy(update={"outcome": "failed", "to_revision": None})
    state.canaries[env] = rec
    state.rollouts[env] = outcome
    state.intents.pop(env, None)
    state.save(settings.workdir)
    line = f"reconciled {env}: {message}"
    progress(line)
    announce(settings, state, "canary", outcome)
    return line


def run(
    settings: Settings,
    state: State,
    env: str,
    target: Any,
    *,
    analyse: Analyse | None = None,
    sleep: Callable[[float], None] = time.sleep,
    image: str | None = None,
) -> DeploymentRecord:
    """A canary release of the validated bundle in env (state already reconciled); the deployment record."""
    return Engine(settings, state, env, target, analyse=analyse, sleep=sleep, image=image).run()


def rolling_update_canary(settings: Settings, state: State, who: Any) -> Any:
    """`mlops rolling-update` with rollout.strategy canary: the release, its audit record, its result."""
    from ..audit import record_deployment
    from ..stages.deploy_to_test_env import DeployResult
    from ..targets import get_target

    target = get_target(settings.deploy.target, settings)
    if not hasattr(target, "canary_start"):
        from ..errors import ConfigError

        raise ConfigError(
            f"the {settings.deploy.target} target does not do canary releases", hint="set rollout.strategy rolling"
        )
    image = state.require_image().reference if target.needs_image else None
    previous = state.deployments["prod"]
    dep = run(settings, state, "prod", target, image=image)
    record_deployment(settings, "prod", who)
    message = f"{dep.model_ref} serving at {dep.url} (canary promoted through {len(settings.rollout.steps)} steps)"
    return DeployResult(
        stage="rolling-update",
        env="prod",
        url=dep.url,
        revision=dep.revision,
        previous_revision=previous.revision,
        message=message,
    )
