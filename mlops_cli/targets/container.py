"""The container target: the built image, pinned by digest, run with podman on this machine.

Host networking only, bound to the environment's host and port (127.0.0.1 by default): the
server's SO_REUSEPORT handover works across containers exactly as across processes, so a
new revision takes over the port before the old container drains and stops.

Each container is named `mlops-<env>-<revision>-<random>`, labelled with its env, workdir and
revision, and told its name (`--instance`), which it reports on /health/ready: a ready answer
counts only from the container we started, and `observe()` finds every container of ours by its
labels (reconciliation). With `deploy.restart: on-failure` podman restarts a container that dies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

import httpx

from ..errors import ConfigError, StageFailed
from ..settings import Settings
from ..state import DeploymentRecord
from ..ui import progress
from . import (
    Journal,
    Observed,
    Release,
    Rollout,
    Server,
    check_port,
    no_journal,
    pause_at,
    poll_delays,
    predates_identity,
)
from .container_canary import ContainerCanary


class ContainerTarget(ContainerCanary):
    needs_image = True

    def __init__(self, settings: Settings):
        self.settings = settings
        podman = shutil.which(settings.deploy.podman)
        if podman is None:
            raise ConfigError(
                f"{settings.deploy.podman} is not installed or not on PATH",
                hint="install podman (Debian: apt-get install podman runc) or use deploy.target: local",
            )
        self.podman = podman

    def _podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [self.podman, *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise StageFailed(f"podman {args[0]} did not finish within {timeout:g} s") from exc

    def _logs(self, name: str, lines: int = 10) -> list[str]:
        done = self._podman("logs", "--tail", str(lines), name)
        return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]

    def _show_logs(self, name: str) -> str:
        """Show the container's last log lines as progress; return the last one."""
        logs = self._logs(name) or ["(the server logged nothing)"]
        for line in logs:
            progress(f"container log | {line}")
        return logs[-1]

    def _running(self, name: str) -> bool | None:
        done = self._podman("inspect", "--type", "container", "--format", "{{.State.Running}}", name)
        return None if done.returncode != 0 else done.stdout.strip() == "true"

    def _started(self, name: str) -> tuple[bool | None, int]:
        """(running, how often podman restarted it) in one inspect."""
        done = self._podman("inspect", "--type", "container", "--format", "{{.State.Running}} {{.RestartCount}}", name)
        running, _, count = done.stdout.strip().partition(" ")
        return (None, 0) if done.returncode != 0 else (running == "true", int(count) if count.isdigit() else 0)

    def ident_of(self, record: DeploymentRecord) -> str | None:
        return record.handle

    def observe(self, env: str) -> Observed:
        """Our containers of env (by label) and which one answers on the port."""
        done = self._podman(
            "ps",
            "--filter",
            f"label=io.mlops.env={env}",
            "--filter",
            f"label=io.mlops.workdir={self.settings.workdir.resolve()}",
            "--format",
            "json",
        )
        if done.returncode != 0:
            raise StageFailed(f"podman ps failed: {(done.stderr or done.stdout).strip()[-300:]}")
        servers = []
        for item in json.loads(done.stdout or "[]"):
            names = item.get("Names") or []
            revision = (item.get("Labels") or {}).get("io.mlops.revision", "")
            if names:
                servers.append(
                    Server(
                        ident=names[0],
                        pid=item.get("Pid") or None,
                        revision=int(revision) if revision.isdigit() else None,
                    )
                )
        env_cfg = getattr(self.settings.deploy, env)
        return Observed(servers=tuple(servers), serving=self._answering(f"http://{env_cfg.host}:{env_cfg.port}"))

    @staticmethod
    def _answering(url: str) -> str | None:
        try:
            answer = httpx.get(f"{url}/health/ready", timeout=2)
            info = answer.json() if answer.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return None
        return info.get("instance") if isinstance(info, dict) else None

    def supervision(self, current: DeploymentRecord) -> dict | None:
        """How often podman restarted the container (--restart=on-failure)."""
        if not current.handle:
            return None
        done = self._podman("inspect", "--type", "container", "--format", "{{.RestartCount}}", current.handle)
        count = done.stdout.strip()
        return {"restarts": int(count), "last_exit": None, "restarted_at": None} if count.isdigit() else None

    def stop_server(self, server: Server) -> None:
        self._remove(server.ident)

    def is_running(self, current: DeploymentRecord) -> bool:
        if not current.handle:
            return False
        return self._running(current.handle) is True

    def _remove(self, name: str) -> None:
        self._podman(
            "stop",
            "--time",
            str(int(self.settings.deploy.stop_timeout_s)),
            name,
            timeout=self.settings.deploy.stop_timeout_s + 30,
        )
        self._podman("rm", "--force", name)

    def stop(self, current: DeploymentRecord) -> bool:
        if not current.handle or self._running(current.handle) is None:
            return False
        was_running = self._running(current.handle)
        self._remove(current.handle)
        return bool(was_running)

    def deploy(
        self, env: str, release: Release, current: DeploymentRecord | None, journal: Journal = no_journal
    ) -> Rollout:
        if not release.image or "@sha256:" not in release.image:
            raise StageFailed("the container target runs images pinned by digest only", hint="run `mlops build-image`")
        env_cfg = getattr(self.settings.deploy, env)
        host, port = env_cfg.host, env_cfg.port
        old = current if current is not None and current.target == "container" and self.is_running(current) else None
        if old is None or old.url != f"http://{host}:{port}":
            check_port(env, host, port)
        revision = (current.revision if current is not None else 0) + 1
        name = f"mlops-{env}-{revision}-{uuid.uuid4().hex[:8]}"
        journal("starting", revision=revision, instance=name, port=port)
        progress(f"starting {release.image} as {name} on {host}:{port}")
        self._run(name, env, revision, release.image, host, port)
        try:
            journal("loading")
            pause_at("loading")
            self._wait_ready(name, f"http://{host}:{port}")
        except BaseException:
            self._podman("rm", "--force", name)
            raise
        if old is not None:
            journal("draining")
            pause_at("draining")
            progress(f"{name} is ready; draining {old.handle}")
            assert old.handle is not None  # old is running (is_running above)
            self._remove(old.handle)
        return Rollout(
            url=f"http://{host}:{port}", revision=revision, previous_revision=old.revision if old else None, handle=name
        )

    def _run(
        self, name: str, env: str, revision: int, image: str, host: str, port: int, labels: tuple[str, ...] = ()
    ) -> None:
        """podman run one server of image on host:port (detached, labelled); StageFailed when podman cannot."""
        argv = [
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--read-only",
            "--label",
            f"io.mlops.env={env}",
            "--label",
            f"io.mlops.workdir={self.settings.workdir.resolve()}",
            "--label",
            f"io.mlops.revision={revision}",
            "--env",
            "SERVING_DRAIN_UNTIL_IDLE=1",
        ]  # its successor takes the port over before it is stopped
        for label in labels:
            argv += ["--label", label]
        if self.settings.deploy.restart == "on-failure":
            argv.append("--restart=on-failure")
        if self.settings.build.insecure:
            argv.append("--tls-verify=false")
        if self.settings.deploy.run_as:
            argv += ["--user", self.settings.deploy.run_as]
        argv += [
            image,
            "python",
            "-m",
            "serving",
            "/app",
            "--host",
            host,
            "--port",
            str(port),
            "--instance",
            name,
            "--revision",
            str(revision),
        ]
        started = self._podman(*argv, timeout=600)
        if started.returncode != 0:
            self._podman("rm", "--force", name)
            last = (started.stderr or started.stdout).strip().splitlines()[-1:] or ["no output"]
            raise StageFailed(f"podman could not start {image}: {last[0]}")

    def _wait_ready(self, name: str, url: str) -> None:
        """Until our container answers /health/ready on the port (its name, not just the port): asked every few
        ms at first (one HTTP request); podman (inspect and logs, ~0.1-0.3 s each) is asked at most every 0.5 s,
        to fail fast on a container that exited or predates the identity flags."""
        timeout = self.settings.deploy.ready_timeout_s
        deadline = time.monotonic() + timeout
        delays = poll_delays(cap=0.2)
        checked = 0.0
        while time.monotonic() < deadline:
            if self._answering(url) == name:  # our container answers, not just the port
                return
            if time.monotonic() - checked >= 0.5:
                running, restarts = self._started(name)
                logs = self._logs(name, 50)
                older = predates_identity(logs)
                if older:
                    raise StageFailed(
                        older,
                        hint="assemble and build it again with this mlops: `mlops assemble-server`, "
                        "`mlops build-image`",
                    )
                if running is False or restarts:  # with --restart=on-failure a start-up crash would loop, not exit
                    raise StageFailed(
                        f"container {name} exited during start-up; last log line: {self._show_logs(name)!r}"
                    )
                checked = time.monotonic()
            time.sleep(next(delays))
        raise StageFailed(
            f"container {name} did not become ready within {timeout:g} s (deploy.ready_timeout_s); "
            f"it was removed; last log line: {self._show_logs(name)!r}"
        )
