"""The chatops ASGI app: `POST /slack/commands` (the /mlops slash command), `POST /slack/interactions`
(Approve/Reject and rollback confirmation buttons), `/health/live`, `/health/ready`, `/metrics`.

Every Slack request is judged before anything else (guard.py): unsigned, forged, stale or replayed ->
401 and an audit line, nothing done; Slack's retry of a request already received -> 200, nothing done
again. Then team, channel and role (auth.py): a refusal is a one-line ephemeral reply and an audit
line. What takes time is queued (bounded: a full queue answers "busy" and runs nothing) and the
request is answered at once, well within Slack's 3 seconds. Releases (deploy, rollback) run on
`workers` threads; replies, status, models and approval decisions on a lane of their own, so they are
never stuck behind releases. Replies go to the release thread (chat.postMessage) or the response_url.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import MlopsError, UsageError
from ..state import now
from .audit import AuditLog
from .auth import Authoriser, Refusal
from .blocks import APPROVE, REJECT, ROLLBACK_CANCEL, ROLLBACK_CONFIRM, decided_blocks, rollback_blocks
from .commands import HELP, Command, parse
from .executors import Approval, Executor, ExecutorError, Release
from .guard import Decisions, RequestGuard
from .lanes import QUICK, QUICK_WORKERS, Job, Lane, Metrics
from .slack import ReplyError, Slack

log = logging.getLogger("mlops.chatops")
UNSIGNED_AUDIT_S = 60.0


@dataclass
class Service:
    """What the app works with; built from the settings in __init__.build, or by a test."""

    guard: RequestGuard
    authoriser: Authoriser
    executor: Executor
    slack: Slack
    audit: AuditLog
    default_env: str = "prod"
    queue_max: int = 1000
    workers: int = 8
    max_body_bytes: int = 65_536
    group_refresh_s: float = 300.0
    decisions_max: int = 10_000  # approvals remembered as decided (oldest forgotten first)
    status: Callable[[str | None], str] | None = None  # env -> status text
    models: Callable[[str | None], str] | None = None  # name -> models text


def _ephemeral(text: str, blocks: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"response_type": "ephemeral", "text": text}
    if blocks:
        body["blocks"] = blocks
    return JSONResponse(body)


def create_app(service: Service, registry: CollectorRegistry) -> Starlette:
    metrics = Metrics(registry)
    # releases (deploy, rollback: minutes, a Jenkins queue, a local workdir lock) and quick jobs (replies,
    # status, models, approval decisions) have separate lanes, so an approval or a status is answered at
    # once even while every release worker waits
    releases = Lane("release", service.queue_max, service.workers)
    quick = Lane("quick", service.queue_max, QUICK_WORKERS)
    lanes = (releases, quick)
    queue = releases.queue
    tasks: list[asyncio.Task] = []
    deciding = Decisions(service.decisions_max)  # approvals being answered or answered: one decision per build
    audit, slack, authoriser, executor = service.audit, service.slack, service.authoriser, service.executor

    def depth() -> int:
        return sum(lane.queue.qsize() for lane in lanes)

    def enqueue(kind: str, run: Callable[[], None]) -> bool:
        try:
            (quick if kind in QUICK else releases).queue.put_nowait(Job(kind, run))
        except asyncio.QueueFull:
            return False
        metrics.depth.set(depth())
        return True

    def reply(response_url: str, text: str, **kwargs: Any) -> None:
        try:
            slack.respond(response_url, text, **kwargs)
        except ReplyError as exc:
            log.warning("reply not delivered: %s", exc)

    async def worker(lane: Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await lane.queue.get()
            metrics.depth.set(depth())
            try:
                await loop.run_in_executor(lane.pool, job.run)
                metrics.jobs.labels(job.kind, "done").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a job: say so, keep the worker
                metrics.jobs.labels(job.kind, "error").inc()
                log.error("%s job failed: %s: %s", job.kind, type(exc).__name__, exc)
            finally:
                lane.queue.task_done()

    async def refresh_groups() -> None:
        while True:
            await asyncio.to_thread(authoriser.refresh, slack.group_members)
            await asyncio.sleep(service.group_refresh_s)

    async def read(request: Request, endpoint: str) -> tuple[bytes, Response | None]:
        """The body once its signature, age and novelty hold; else (b"", the answer to give)."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > service.max_body_bytes):
            metrics.requests.labels(endpoint, "too-large").inc()
            return b"", JSONResponse({"error": "request too large"}, status_code=413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > service.max_body_bytes:
                metrics.requests.labels(endpoint, "too-large").inc()
                return b"", JSONResponse({"error": "request too large"}, status_code=413)
        if endpoint == "commands" and b"ssl_check=1" in body:
            probe = parse_qs(body.decode("utf-8", "replace"))
            if (
                probe.get("ssl_check") == ["1"] and "command" not in probe
            ):  # Slack checking our certificate: 200, nothing done
                metrics.requests.labels(endpoint, "ssl-check").inc()
                return b"", Response(status_code=200)
        verdict = service.guard.check(body, request.headers)
        if verdict == "ok":
            return body, None
        metrics.requests.labels(endpoint, verdict).inc()
        client = request.client.host if request.client else "?"
        if verdict == "retry":
            log.info(
                "%s: Slack retry %s of a request already received: not acted on again",
                endpoint,
                request.headers.get("x-slack-retry-num"),
            )
            return b"", Response(status_code=200)
        audit_unsigned(endpoint, verdict, client)
        return b"", JSONResponse({"error": f"{verdict} request"}, status_code=401)

    quiet: dict[str, tuple[float, int]] = {}  # reason -> (when last audited, similar refusals since)

    def audit_unsigned(endpoint: str, verdict: str, client: str) -> None:
        """Requests anyone on the internet can send (unsigned, forged, stale, replayed): at most one audit line
        per reason a minute, counting the others, so a flood cannot fill the disk; the metrics count each."""
        at = time.monotonic()
        last, similar = quiet.get(verdict, (float("-inf"), 0))
        if at - last < UNSIGNED_AUDIT_S:
            quiet[verdict] = (last, similar + 1)
            return
        quiet[verdict] = (at, 0)
        audit.record("refused", endpoint=endpoint, reason=verdict, client=client, similar_before=similar or None)

    def refused(endpoint: str, refusal: Refusal, **fields: Any) -> None:
        metrics.requests.labels(endpoint, f"refused-{refusal.reason}").inc()
        audit.record("refused", endpoint=endpoint, reason=refusal.reason, **fields)

    async def commands(request: Request) -> Response:
        started = time.monotonic()
        try:
            return await _command(request)
        finally:
            metrics.ack.labels("commands").observe(time.monotonic() - started)

    async def _command(request: Request) -> Response:
        body, answer = await read(request, "commands")
        if answer is not None:
            return answer
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        user, team, channel = form.get("user_id", ""), form.get("team_id"), form.get("channel_id", "")
        text, response_url = form.get("text", ""), form.get("response_url", "")
        who = dict(user=user, team=team, channel=channel, command=f"{form.get('command', '')} {text}".strip())
        if not service.guard.first_time(form.get("trigger_id")):
            metrics.requests.labels("commands", "duplicate").inc()
            log.info("commands: a second delivery of trigger %s: not acted on again", form.get("trigger_id"))
            return Response(status_code=200)
        refusal = authoriser.where(team, channel)
        if refusal is not None:
            refused("commands", refusal, **who)
            return _ephemeral(refusal.message)
        try:
            cmd = parse(text, service.default_env)
        except UsageError as exc:
            metrics.requests.labels("commands", "usage").inc()
            return _ephemeral(str(exc))
        refusal = authoriser.allow(user, cmd.role, cmd.what)
        if refusal is not None:
            refused("commands", refusal, **who)
            return _ephemeral(refusal.message)
        if cmd.verb == "help":
            metrics.requests.labels("commands", "accepted").inc()
            return _ephemeral(HELP)
        if cmd.verb == "rollback":
            env = cmd.env or service.default_env  # (parse() always names it)
            metrics.requests.labels("commands", "accepted").inc()
            audit.record("rollback-asked", **who)
            return _ephemeral(f"Roll {env} back?", blocks=rollback_blocks(env, user))
        job = _job(cmd, user, channel, response_url)
        if not enqueue(cmd.verb, job):
            refused("commands", Refusal("busy", ""), **who)
            return _ephemeral(
                f"busy: {service.queue_max} commands are waiting; nothing was started, try again in a minute"
            )
        metrics.requests.labels("commands", "accepted").inc()
        audit.record("accepted", **who)
        if cmd.verb == "deploy":
            return _ephemeral(f"deploying `{cmd.model}` to {cmd.env}: follow the thread in this channel")
        return _ephemeral("looking…")

    def _job(cmd: Command, user: str, channel: str, response_url: str) -> Callable[[], None]:
        if cmd.verb == "deploy":
            release = Release(
                model=cmd.model or "",
                env=cmd.env or service.default_env,
                target=cmd.target,
                user=user,
                channel=channel,
                thread_ts="",
            )
            return lambda: release_thread(
                release,
                response_url,
                executor.deploy,
                f":package: <@{user}> asked to deploy `{cmd.model}` to *{release.env}*"
                + (f" ({cmd.target})" if cmd.target else ""),
            )
        if cmd.verb == "status":
            return lambda: reply(response_url, _safe(service.status, cmd.env, "status"))
        return lambda: reply(response_url, _safe(service.models, cmd.name, "models"))

    def _safe(view: Callable[[str | None], str] | None, arg: str | None, what: str) -> str:
        if view is None:
            return f"{what} is not available here"
        try:
            return view(arg)
        except MlopsError as exc:
            return f"cannot show {what}: {exc}"

    def release_thread(release: Release, response_url: str, action: Callable[..., None], opening: str) -> None:
        """Open the release's thread, run the executor's action, report its outcome there."""
        try:
            ts = slack.post(release.channel, opening)
        except ReplyError as exc:
            audit.record(
                "failed",
                user=release.user,
                channel=release.channel,
                model=release.model,
                env=release.env,
                reason=str(exc),
            )
            reply(response_url, f"cannot post in this channel ({exc}): invite the app; nothing was started")
            return
        release = Release(release.model, release.env, release.target, release.user, release.channel, ts)

        def say(text: str, blocks: list[dict[str, Any]] | None = None) -> None:
            try:
                slack.post(release.channel, text, thread_ts=ts, blocks=blocks)
            except ReplyError as exc:
                log.warning("thread %s: %s", ts, exc)

        kind = "rollback" if action == executor.rollback else "release"
        try:
            action(release, say)
        except ExecutorError as exc:
            audit.record(
                "failed",
                kind=kind,
                user=release.user,
                channel=release.channel,
                model=release.model or None,
                env=release.env,
                reason=str(exc),
            )
            say(f":x: {exc}")
            return
        except Exception as exc:  # a bug: the thread still hears that it stopped
            log.error("%s failed: %s: %s", kind, type(exc).__name__, exc)
            say(f":x: internal error: {type(exc).__name__}; see the service's log")
            raise
        audit.record(
            "released" if kind == "release" else "rolled-back",
            user=release.user,
            channel=release.channel,
            model=release.model or None,
            env=release.env,
            thread=ts,
        )

    async def interactions(request: Request) -> Response:
        started = time.monotonic()
        try:
            return await _interaction(request)
        finally:
            metrics.ack.labels("interactions").observe(time.monotonic() - started)

    async def _interaction(request: Request) -> Response:
        body, answer = await read(request, "interactions")
        if answer is not None:
            return answer
        try:
            payload = json.loads(parse_qs(body.decode("utf-8", "replace"))["payload"][0])
        except (KeyError, ValueError):
            payload = None
        if not isinstance(payload, dict) or not all(
            isinstance(payload.get(k) or {}, dict) for k in ("user", "team", "channel", "container", "message")
        ):
            metrics.requests.labels("interactions", "malformed").inc()
            return JSONResponse({"error": "no interaction payload"}, status_code=400)
        actions = payload.get("actions")
        if payload.get("type") != "block_actions" or not isinstance(actions, list) or not actions:
            metrics.requests.labels("interactions", "ignored").inc()
            return Response(status_code=200)
        user = (payload.get("user") or {}).get("id", "")
        team = (payload.get("team") or {}).get("id") or (payload.get("user") or {}).get("team_id")
        channel = (payload.get("channel") or {}).get("id", "")
        response_url = payload.get("response_url", "")
        message = payload.get("message") or {}
        message_ts = (payload.get("container") or {}).get("message_ts") or message.get("ts", "")
        action = actions[0] if isinstance(actions[0], dict) else {}
        action_id = action.get("action_id", "")
        who = dict(user=user, team=team, channel=channel, action=action_id)
        if not service.guard.first_time(payload.get("trigger_id")):
            metrics.requests.labels("interactions", "duplicate").inc()
            return Response(status_code=200)

        def refuse(refusal: Refusal, **fields: Any) -> Response:
            refused("interactions", refusal, **who, **fields)
            enqueue("reply", lambda: reply(response_url, refusal.message))
            return Response(status_code=200)

        refusal = authoriser.where(team, channel)
        if refusal is not None:
            return refuse(refusal)
        if action_id in (APPROVE, REJECT):
            try:
                approval = executor.approval(action.get("value", ""))
            except ExecutorError as exc:
                return refuse(Refusal("invalid-button", f"not answered: {exc}"))
            refusal = authoriser.may_approve(user, approval.requested_by)
            if refusal is not None:
                return refuse(refusal, build=approval.key)
            if not deciding.claim(approval.key):
                return refuse(
                    Refusal("decided", f"{approval.job} #{approval.build} is decided already"), build=approval.key
                )
            approve = action_id == APPROVE
            thread = message.get("thread_ts") or message_ts
            if not enqueue(
                "decision", lambda: decide(approval, approve, user, channel, message, message_ts, thread, response_url)
            ):
                deciding.release(approval.key)
                return refuse(Refusal("busy", "busy: not answered, click again in a minute"), build=approval.key)
            metrics.requests.labels("interactions", "accepted").inc()
            return Response(status_code=200)
        if action_id in (ROLLBACK_CONFIRM, ROLLBACK_CANCEL):
            try:
                data = json.loads(action.get("value", ""))
                env, nonce = data["env"], data["nonce"]
            except (ValueError, KeyError, TypeError):
                env = nonce = None
            if env not in ("test", "prod") or not isinstance(nonce, str) or not nonce:
                return refuse(Refusal("invalid-button", "not answered: the button carries no environment"))
            refusal = authoriser.allow(user, "deployer", "roll back")
            if refusal is not None:
                return refuse(refusal)
            if not deciding.claim(f"rollback:{nonce}"):
                return refuse(Refusal("decided", f"this rollback of {env} was confirmed or cancelled already"))
            if action_id == ROLLBACK_CANCEL:
                enqueue("reply", lambda: reply(response_url, f"rollback of {env} cancelled", replace_original=True))
                return Response(status_code=200)
            release = Release(model="", env=env, target=None, user=user, channel=channel, thread_ts="")

            def rollback() -> None:
                reply(response_url, f"rollback of {env} confirmed by <@{user}>", replace_original=True)
                release_thread(release, response_url, executor.rollback, f":rewind: <@{user}> rolls *{env}* back")

            if not enqueue("rollback", rollback):
                deciding.release(f"rollback:{nonce}")
                return refuse(Refusal("busy", "busy: nothing was started, try again in a minute"))
            metrics.requests.labels("interactions", "accepted").inc()
            audit.record("accepted", **who, env=env)
            return Response(status_code=200)
        metrics.requests.labels("interactions", "ignored").inc()
        return Response(status_code=200)

    def decide(
        approval: Approval,
        approve: bool,
        user: str,
        channel: str,
        message: dict[str, Any],
        message_ts: str,
        thread: str,
        response_url: str,
    ) -> None:
        verb = "approved" if approve else "rejected"
        try:
            requested_by = executor.requester(approval)
            refusal = authoriser.may_approve(user, requested_by)
            if refusal is None:
                executor.decide(approval, approve, user)
        except ExecutorError as exc:
            deciding.release(approval.key)
            audit.record(
                "decision-failed", user=user, channel=channel, build=approval.key, decision=verb, reason=str(exc)
            )
            reply(response_url, f"not {verb}: {exc}")
            return
        if refusal is not None:  # the build names another requester than its button did
            deciding.release(approval.key)
            refused("interactions", refusal, user=user, channel=channel, action=verb, build=approval.key)
            reply(response_url, refusal.message)
            return
        audit.record(
            verb,
            user=user,
            channel=channel,
            build=approval.key,
            model=approval.model or None,
            digest=approval.digest or None,
            requested_by=requested_by,
        )
        icon = ":white_check_mark:" if approve else ":no_entry:"
        line = f"{icon} {verb.capitalize()} by <@{user}> at {now()}"
        try:
            slack.update(
                channel,
                message_ts,
                f"{approval.job} #{approval.build} {verb} by <@{user}>",
                decided_blocks(message, line),
            )
        except ReplyError as exc:  # Jenkins has its answer; the thread still hears it
            log.warning("approval message not updated: %s", exc)
            try:
                slack.post(channel, line, thread_ts=thread)
            except ReplyError:
                pass

    async def prometheus(request: Request) -> Response:
        metrics.depth.set(depth())
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def live(request: Request) -> Response:
        dead = [t.get_name() for t in tasks if t.done()]
        if dead:
            return JSONResponse({"status": "dead", "reason": f"{', '.join(dead)} ended"}, status_code=503)
        return JSONResponse({"status": "alive", "queued": depth()})

    async def ready(request: Request) -> Response:
        if not tasks or any(t.done() for t in tasks):
            return JSONResponse({"status": "not ready", "reason": "workers not running"}, status_code=503)
        # a full queue keeps the pod ready: Slack should hear "busy", not meet a closed door
        return JSONResponse({"status": "ready", "queued": depth(), "executor": executor.name})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for lane in lanes:
            lane.pool = ThreadPoolExecutor(lane.workers, thread_name_prefix=f"chatops-{lane.name}")
            tasks.extend(
                asyncio.create_task(worker(lane), name=f"chatops-{lane.name}-worker-{i}") for i in range(lane.workers)
            )
        if authoriser.groups:
            tasks.append(asyncio.create_task(refresh_groups(), name="chatops-groups"))
        try:
            yield
        finally:
            close = getattr(executor, "close", None)  # the local executor: releases waiting for approval end
            if close is not None:
                close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for lane in lanes:
                if lane.pool is not None:
                    lane.pool.shutdown(wait=False, cancel_futures=True)

    routes = [
        Route("/slack/commands", commands, methods=["POST"]),
        Route("/slack/interactions", interactions, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.queue = queue
    app.state.quick = quick.queue
    app.state.metrics = metrics
    app.state.decisions = deciding
    return app


def default_audit_path(workdir: Path) -> Path:
    return workdir / "chatops-audit.jsonl"
