"""The local deploy target, the embedded default: the bundle as a background server process.

A new revision starts on the same port with SO_REUSEPORT and `--await-handover`: it loads its
model and waits. Only when the deployer sends SIGUSR1 does it listen, and then it takes every
new connection (docs/bundle.md); the old process drains and exits, so a rolling update on one
machine fails no request. A new revision that never becomes ready, or whose deployer died, never
listens and so never takes a connection. Each server carries an identity token (`--instance`,
kept as the deployment's handle) that it reports on /health/ready: a ready answer counts only
from the process we started, and `observe()` finds every server of ours by it (reconciliation).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ..errors import StageFailed
from ..extras import SERVER_STACK, require
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
    ready_identity,
    wait_for_exit,
)
from .local_canary import LocalCanary

JENKINS_KILL_MARKERS = ("BUILD_ID", "JENKINS_NODE_COOKIE")
# One BLAS thread per server, as validate-model's trial run has (mlops_cli.trial): servers of a rolling
# update share the machine with each other and the deployer, and each idle OpenBLAS thread spins ~0.1 s
# of CPU after it starts (numpy and scipy load one OpenBLAS each): ~0.16 s of CPU per server start.
ONE_BLAS_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Popen objects of the servers this process started: kept so they are reaped, not garbage.
_CHILDREN: dict[int, subprocess.Popen] = {}


def _alive(pid: int | None, bundle_path: str | None = None) -> bool:
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
    wait_for_exit(pid, timeout)  # told by the kernel the moment it exits, where it can (a pidfd)
    delays = poll_delays(first=0.001, cap=0.05)
    while True:
        if child is not None and child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return True
        if child is None and not _alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(next(delays))


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM (the server drains), then SIGKILL if it has not exited within timeout."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _CHILDREN.pop(pid, None)
        return
    if not _wait_exit(pid, timeout):
        # Our servers lead their own process group (start_new_session), a supervisor's server with it:
        # kill the group, and wait until none of it lives, so that the port is free when we return (the
        # server's death by PR_SET_PDEATHSIG would come after its supervisor's exit, not before).
        try:
            group = pid if os.getpgid(pid) == pid else None
            if group:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            group = None
        _wait_exit(pid, 5)
        if group:
            _wait_group_gone(group, 5)


def _wait_group_gone(group: int, timeout: float) -> None:
    """Until no live (non-zombie) process of the process group is left, at most timeout seconds."""
    deadline, delays = time.monotonic() + timeout, poll_delays(first=0.001, cap=0.05)
    while time.monotonic() < deadline:
        members = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                except OSError:
                    continue
                if fields[2] == str(group) and fields[0] not in ("Z", "X"):
                    members.append(entry.name)
        if not members:
            return
        time.sleep(next(delays))


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


SUPERVISOR = Path(__file__).with_name("supervisor.py")


def server_command(
    bundle: Path | str, host: str, port: int, ready_file: Path, instance: str, revision: int, handover: bool
) -> list[str]:
    """`python -m serving` for one local server with its identity (instance, revision) and ready file;
    with `handover`, it loads and waits for SIGUSR1 before it listens."""
    argv = [sys.executable, "-m", "serving", str(bundle), "--host", host, "--port", str(port)]
    argv += ["--ready-file", str(ready_file), "--instance", instance, "--revision", str(revision)]
    return argv + ["--await-handover"] if handover else argv


def supervised(argv: list[str], status: Path) -> list[str]:
    """ARGV under a supervisor that restarts it if it dies while serving (deploy.restart: on-failure)."""
    # -IS: standard library only, no site (its .pth files) to process before the server starts
    return [sys.executable, "-IS", str(SUPERVISOR), "--status", str(status), "--", *argv]


def server_process_environ(bundle: Path | str, **extra: str) -> dict[str, str]:
    """The environment of a local server process: no settings or credentials (server_environ), the bundle
    on PYTHONPATH and kept as digested (no bytecode written into it), one BLAS thread unless the
    environment says otherwise, and out of reach of Jenkins' kill-after-build."""
    environ = dict(server_environ(os.environ), PYTHONPATH=str(bundle), PYTHONDONTWRITEBYTECODE="1", **extra)
    for name, value in ONE_BLAS_THREAD.items():
        environ.setdefault(name, value)
    for name in JENKINS_KILL_MARKERS:  # Jenkins kills processes that carry these after the build
        if name in environ:
            environ[name] = "dontKillMe"
    return environ


def _is_supervisor(argv: list[str]) -> bool:
    return len(argv) > 2 and argv[2] == str(SUPERVISOR)


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


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


def server_environ(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """The environment a local server starts with: the toolkit's own, minus settings and secrets."""
    return {
        name: value
        for name, value in environ.items()
        if not name.upper().startswith(_NOT_FOR_SERVERS) and not any(word in name.upper() for word in _SECRET_WORDS)
    }


class LocalTarget(LocalCanary):
    needs_image = False

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_dir = settings.workdir.resolve() / "run"  # the server's cwd is its bundle
        self.log_dir = settings.workdir.resolve() / "logs"

    def ident_of(self, record: DeploymentRecord) -> str | None:
        return record.handle or (f"pid:{record.pid}" if record.pid else None)

    def supervision_file(self, env: str, revision: int) -> Path:
        return self.run_dir / f"{env}-{revision}.supervisor.json"

    def supervision(self, current: DeploymentRecord) -> dict | None:
        """What the supervisor of a deployment says: restarts, last exit, whether it gave up."""
        try:
            info = json.loads(self.supervision_file(current.env, current.revision).read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) and info.get("pid") == current.pid else None

    def is_running(self, current: DeploymentRecord) -> bool:
        if not current.pid or not _alive(current.pid, current.bundle_path):
            return False
        return not current.handle or _flag(_cmdline(current.pid), "--instance") == current.handle

    def stop(self, current: DeploymentRecord) -> bool:
        if current.pid is None or not self.is_running(current):
            return False
        terminate(current.pid, self.settings.deploy.stop_timeout_s)
        return True

    def observe(self, env: str) -> Observed:
        """Every server process of this workdir's env (found by its ready-file path), and who answers the port."""
        for pid, child in list(_CHILDREN.items()):  # reap ours that another process stopped
            if child.poll() is not None:
                _CHILDREN.pop(pid, None)
        prefix = str(self.run_dir / f"{env}-")
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or not _alive(int(name)):
                continue
            argv = _cmdline(int(name))
            ready = _flag(argv, "--ready-file")
            if not ready or not ready.startswith(prefix) or not ready.endswith(".ready"):
                continue
            found.append((int(name), argv, ready))
        supervised = {_flag(argv, "--instance") for _, argv, _ in found if _is_supervisor(argv)}
        servers = []
        for pid, argv, ready in found:
            instance = _flag(argv, "--instance")
            if instance in supervised and not _is_supervisor(argv):
                continue  # a supervised server: its supervisor stands for it
            revision = _flag(argv, "--revision") or ready[len(prefix) : -len(".ready")]
            servers.append(
                Server(ident=instance or f"pid:{pid}", pid=pid, revision=int(revision) if revision.isdigit() else None)
            )
        env_cfg = getattr(self.settings.deploy, env)
        return Observed(
            servers=tuple(sorted(servers, key=lambda x: x.pid or 0)),
            serving=self._answering(f"http://{env_cfg.host}:{env_cfg.port}"),
        )

    @staticmethod
    def _answering(url: str) -> str | None:
        return ready_identity(url)

    def stop_server(self, server: Server) -> None:
        if server.pid and _alive(server.pid):
            terminate(server.pid, self.settings.deploy.stop_timeout_s)

    def deploy(
        self, env: str, release: Release, current: DeploymentRecord | None, journal: Journal = no_journal
    ) -> Rollout:
        require(SERVER_STACK, "the local target runs the server", "serve")
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
        instance = uuid.uuid4().hex[:16]
        argv = server_command(bundle, host, port, ready_file, instance, revision, handover=True)
        if self.settings.deploy.restart == "on-failure":  # a supervisor restarts it if it dies while serving
            argv = supervised(argv, self.supervision_file(env, revision))
        # drain until idle: its successor takes the port over before it is stopped
        environ = server_process_environ(bundle, SERVING_DRAIN_UNTIL_IDLE="1")
        url = f"http://{host}:{port}"
        journal("starting", revision=revision, instance=instance, port=port)
        pause_at("starting")
        progress(f"starting revision {revision} of {env} on {host}:{port}")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=bundle,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        try:
            journal("loading", pid=proc.pid)
            pause_at("loading")
            self._wait_loaded(proc, ready_file, log_path)
            journal("switching")
            pause_at("switching")
            os.kill(proc.pid, signal.SIGUSR1)  # listen: from now on it takes every new connection
            self._wait_serving(proc, ready_file, log_path, url, instance)
        except BaseException:
            terminate(proc.pid, 5)
            raise
        if old is not None:
            journal("draining")
            pause_at("draining")
            progress(f"revision {revision} is ready; draining revision {old.revision} (pid {old.pid})")
            assert old.pid is not None  # old is running (is_running above)
            terminate(old.pid, self.settings.deploy.stop_timeout_s)
        return Rollout(
            url=url,
            revision=revision,
            previous_revision=old.revision if old else None,
            pid=proc.pid,
            log_path=str(log_path),
            handle=instance,
        )

    def _ready_info(self, proc: subprocess.Popen, ready_file: Path, log_path: Path) -> dict:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            try:
                older = predates_identity(log_path.read_text(errors="replace").splitlines()[-20:])
            except OSError:
                older = None
            if older:
                raise StageFailed(older, hint="assemble it again with this mlops: `mlops assemble-server`")
            raise StageFailed(
                f"the server exited during start-up (exit code {proc.returncode}); {_last_words(log_path)}"
            )
        try:
            info = json.loads(ready_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        if not isinstance(info, dict) or not info.get("pid"):
            return {}
        return info if proc.pid in (info["pid"], _ppid(info["pid"])) else {}  # the server, or its supervisor's

    def _wait_loaded(self, proc: subprocess.Popen, ready_file: Path, log_path: Path) -> None:
        """Until the server has loaded its model and waits for the handover (it does not listen yet)."""
        timeout = self.settings.deploy.ready_timeout_s
        deadline = time.monotonic() + timeout
        delays = poll_delays(cap=0.01)  # a read of a small file: 100 a second cost nothing, 0.1 s apart cost 50 ms
        while time.monotonic() < deadline:
            if self._ready_info(proc, ready_file, log_path):
                return
            time.sleep(next(delays))
        raise StageFailed(
            f"the server did not become ready within {timeout:g} s (deploy.ready_timeout_s); "
            f"it was stopped (it never took a connection); {_last_words(log_path)}"
        )

    def _wait_serving(self, proc: subprocess.Popen, ready_file: Path, log_path: Path, url: str, instance: str) -> None:
        """Until the server listens and its own /health/ready answers on the port (identity, not port)."""
        timeout = self.settings.deploy.ready_timeout_s
        deadline = time.monotonic() + timeout
        delays = poll_delays(first=0.002, cap=0.05)
        while time.monotonic() < deadline:
            info = self._ready_info(proc, ready_file, log_path)
            if info and info.get("listening") is not False and self._answering(url) == instance:
                return
            time.sleep(next(delays))
        raise StageFailed(
            f"the server loaded but did not answer on {url} within {timeout:g} s "
            f"(deploy.ready_timeout_s); it was stopped; {_last_words(log_path)}"
        )
