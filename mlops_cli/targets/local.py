"""The local deploy target, the embedded default: the bundle as a background server process.

A new revision starts on the same port with SO_REUSEPORT; once ready it takes every new
connection (docs/bundle.md), then the old process drains and exits, so a rolling update on
one machine fails no request. If the new one never becomes ready, it is stopped and the old
one never noticed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx

from ..config import Settings
from ..errors import StageFailed
from ..state import DeploymentRecord
from ..ui import progress
from . import Release, Rollout, check_port

JENKINS_KILL_MARKERS = ("BUILD_ID", "JENKINS_NODE_COOKIE")

# Popen objects of the servers this process started: kept so they are reaped, not garbage.
_CHILDREN: dict[int, subprocess.Popen] = {}


def _alive(pid: Optional[int], bundle_path: Optional[str] = None) -> bool:
    """A live (not zombie) process that is one of our servers."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return b"serving" in cmdline and (bundle_path is None or bundle_path.encode() in cmdline)


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    child = _CHILDREN.get(pid)
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return True
        if child is None and not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM (the server drains), then SIGKILL if it has not exited within timeout."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _CHILDREN.pop(pid, None)
        return
    if not _wait_exit(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_exit(pid, 5)


def _last_words(path: Path, show: int = 10) -> str:
    """Show the server's last log lines as progress; return the last one and the log's path."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    for line in lines[-show:]:
        progress(f"server log | {line}")
    return (f"last log line: {lines[-1]!r}; " if lines else "") + f"log: {path}"


# What the toolkit needs and the server does not: its settings and the credentials of the
# model sources, registries and notifiers. A server (like the image) gets none of them.
_NOT_FOR_SERVERS = ("MLOPS_", "CLEARML_", "AWS_", "TRAINS_")
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY")


def server_environ(environ: "os._Environ[str] | dict[str, str]") -> dict[str, str]:
    """The environment a local server starts with: the toolkit's own, minus settings and secrets."""
    return {name: value for name, value in environ.items()
            if not name.upper().startswith(_NOT_FOR_SERVERS)
            and not any(word in name.upper() for word in _SECRET_WORDS)}


class LocalTarget:
    needs_image = False

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_dir = settings.workdir.resolve() / "run"  # the server's cwd is its bundle
        self.log_dir = settings.workdir.resolve() / "logs"

    def is_running(self, current: DeploymentRecord) -> bool:
        return _alive(current.pid, current.bundle_path)

    def stop(self, current: DeploymentRecord) -> bool:
        if not self.is_running(current):
            return False
        terminate(current.pid, self.settings.deploy.stop_timeout_s)
        return True

    def deploy(self, env: str, release: Release, current: Optional[DeploymentRecord]) -> Rollout:
        env_cfg = getattr(self.settings.deploy, env)
        host, port = env_cfg.host, env_cfg.port
        bundle = release.bundle
        old = current if current is not None and self.is_running(current) else None
        if old is None or old.url != f"http://{host}:{port}":
            check_port(env, host, port)
        revision = (current.revision if current is not None else 0) + 1
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ready_file = self.run_dir / f"{env}-{revision}.ready"
        ready_file.unlink(missing_ok=True)
        log_path = self.log_dir / f"{env}-{revision}.log"
        argv = [sys.executable, "-m", "serving", str(bundle), "--host", host, "--port", str(port),
                "--ready-file", str(ready_file)]
        environ = dict(server_environ(os.environ), PYTHONPATH=str(bundle),
                       PYTHONDONTWRITEBYTECODE="1")  # the bundle stays as digested
        for name in JENKINS_KILL_MARKERS:  # Jenkins kills processes that carry these after the build
            if name in environ:
                environ[name] = "dontKillMe"
        progress(f"starting revision {revision} of {env} on {host}:{port}")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=bundle, env=environ, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _CHILDREN[proc.pid] = proc
        url = f"http://{host}:{port}"
        try:
            self._wait_ready(proc, ready_file, log_path, url)
        except BaseException:
            terminate(proc.pid, 5)
            raise
        if old is not None:
            progress(f"revision {revision} is ready; draining revision {old.revision} (pid {old.pid})")
            terminate(old.pid, self.settings.deploy.stop_timeout_s)
        return Rollout(url=url, revision=revision, previous_revision=old.revision if old else None,
                       pid=proc.pid, log_path=str(log_path))

    def _wait_ready(self, proc: subprocess.Popen, ready_file: Path, log_path: Path, url: str) -> None:
        timeout = self.settings.deploy.ready_timeout_s
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _CHILDREN.pop(proc.pid, None)
                raise StageFailed(f"the server exited during start-up (exit code {proc.returncode}); "
                                  f"{_last_words(log_path)}")
            if ready_file.is_file():
                try:
                    info = json.loads(ready_file.read_text())
                except (OSError, json.JSONDecodeError):
                    info = {}
                if info.get("pid") == proc.pid and self._healthy(url):
                    return
            time.sleep(0.1)
        raise StageFailed(f"the server did not become ready within {timeout:g} s (deploy.ready_timeout_s); "
                          f"it was stopped; {_last_words(log_path)}")

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
