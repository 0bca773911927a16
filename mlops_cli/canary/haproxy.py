"""HAProxy in front of two revisions on one machine: its config, its process, its runtime API.

The local and container targets start one HAProxy per canary, bound on the environment's own
port (so users keep calling the same URL), with two servers in one backend: `stable` and `canary`,
each a revision's server on its own port. Weights change at run time through HAProxy's admin
socket (`set server mlops/canary weight N`): no reload, no dropped connection. HAProxy binds with
SO_REUSEPORT (its default on Linux), so it joins the port beside the server that held it; the
servers' steering program (serving/sockets.py) hands every new connection to the newest listener.

Files, all under `<workdir>/run/`: `haproxy-<env>.cfg`, `haproxy-<env>.sock` (admin socket),
`haproxy-<env>.pid`, and `canary-<env>.json` (what the target knows about the running canary).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, StageFailed

BACKEND = "mlops"
PACKAGE_HINT = "install HAProxy (Debian: apt-get install haproxy) or use rollout.strategy: rolling"


def haproxy_binary(name: str = "haproxy") -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(
            "rollout.strategy canary on this target needs HAProxy, which is not installed", hint=PACKAGE_HINT
        )
    return path


@dataclass(frozen=True)
class Split:
    """Where one HAProxy listens and the two servers it sends to."""

    env: str
    host: str
    port: int
    stable: str  # host:port
    canary: str  # host:port
    weight: int  # percent to the canary


def weights(percent: int) -> tuple[int, int]:
    """(stable, canary) HAProxy weights for `percent` % to the canary."""
    percent = max(0, min(100, int(percent)))
    return 100 - percent, percent


def render(split: Split, socket_path: Path) -> str:
    """The HAProxy config: one frontend on the env's port, one backend with the two servers."""
    stable_w, canary_w = weights(split.weight)
    return f"""# written by mlops for the canary of {split.env}; weights change through the admin socket
global
    stats socket {socket_path} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 10s
    retries 2
    option redispatch
    # a soft stop answers the next request of an idle keep-alive connection with "Connection: close"
    # instead of closing it under a client that may be sending (the behaviour before HAProxy 2.4)
    option idle-close-on-response

frontend {split.env}
    bind {split.host}:{split.port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /health/ready
    server stable {split.stable} weight {stable_w} check inter 1s fall 3 rise 1
    server canary {split.canary} weight {canary_w} check inter 1s fall 3 rise 1
"""


def command(socket_path: Path, line: str, timeout: float = 5.0) -> str:
    """Send one runtime API command on the admin socket; HAProxy's answer (empty means done)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:
            raise StageFailed(f"HAProxy's admin socket {socket_path} did not answer: {exc.strerror or exc}") from exc
    return b"".join(chunks).decode(errors="replace").strip()


def set_weight(socket_path: Path, percent: int) -> None:
    """Send `percent` % of new requests to the canary (the stable server gets the rest)."""
    stable_w, canary_w = weights(percent)
    # raise the receiver first, so that for a moment both take traffic rather than neither
    order = [("canary", canary_w), ("stable", stable_w)] if canary_w else [("stable", stable_w), ("canary", canary_w)]
    for server, weight in order:
        answer = command(socket_path, f"set server {BACKEND}/{server} weight {weight}")
        if answer:
            raise StageFailed(f"HAProxy refused the weight {weight} for {server}: {answer.splitlines()[0]}")


def current_weights(socket_path: Path) -> dict[str, int]:
    """The servers' current weights, as HAProxy reports them (`get weight`)."""
    out = {}
    for server in ("stable", "canary"):
        answer = command(socket_path, f"get weight {BACKEND}/{server}")
        try:
            out[server] = int(answer.split()[0])
        except (ValueError, IndexError):
            raise StageFailed(f"HAProxy's weight of {server} is unreadable: {answer[:100]!r}") from None
    return out


def as_user(user: str | None) -> list[str]:
    """The argv prefix that runs a program as `uid[:gid]` (setpriv), when root is asked to; else none.

    Sockets join a SO_REUSEPORT group only under the same user: a HAProxy that joins the port of a
    server running as deploy.run_as must run as that user too."""
    if not user or os.geteuid() != 0:
        return []
    uid, _, gid = user.partition(":")
    return ["setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups"]


def start(
    split: Split, run_dir: Path, *, binary: str = "haproxy", timeout: float = 10.0, user: str | None = None
) -> int:
    """Write the config, check it (haproxy -c), start HAProxy in its own session; its pid once the socket answers.

    With `user` (uid[:gid], when this process is root) HAProxy runs as that user; run_dir must be writable by it."""
    exe = haproxy_binary(binary)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg, sock, pid_path = paths(run_dir, split.env)
    sock.unlink(missing_ok=True)
    cfg.write_text(render(split, sock))
    check = subprocess.run(
        [exe, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=30
    )
    if check.returncode != 0:
        said = (check.stderr + check.stdout).strip().splitlines()
        alerts = [line.rsplit("] : ", 1)[-1].strip() for line in said if "ALERT" in line] or said[-1:] or ["no output"]
        raise StageFailed(f"HAProxy rejected the config it was given ({cfg}): {alerts[0]}")
    log = open(run_dir / f"haproxy-{split.env}.log", "ab")
    with log:
        proc = subprocess.Popen(
            [*as_user(user), exe, "-f", str(cfg), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    pid_path.write_text(f"{proc.pid}\n")  # ours: HAProxy writes no pidfile in the foreground
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            tail = (run_dir / f"haproxy-{split.env}.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise StageFailed(
                f"HAProxy exited at start (exit code {proc.returncode}): {tail[0] if tail else 'no output'}"
            )
        try:
            command(sock, "show info", timeout=1)
            return proc.pid
        except StageFailed:
            time.sleep(0.05)
    stop(proc.pid, 1)
    raise StageFailed(f"HAProxy did not open its admin socket within {timeout:g} s")


_CHILDREN: dict[int, subprocess.Popen] = {}


def paths(run_dir: Path, env: str) -> tuple[Path, Path, Path]:
    return run_dir / f"haproxy-{env}.cfg", run_dir / f"haproxy-{env}.sock", run_dir / f"haproxy-{env}.pid"


def is_haproxy(pid: int | None, cfg: Path) -> bool:
    """A live HAProxy process of ours: its command line names our config."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X") and str(cfg).encode() in argv


def running_pid(run_dir: Path, env: str) -> int | None:
    """The pid of env's HAProxy if it runs (from its pid file, checked against /proc)."""
    cfg, _, pid_path = paths(run_dir, env)
    try:
        pid = int(pid_path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if is_haproxy(pid, cfg) else None


def stop(pid: int, timeout: float) -> None:
    """Soft stop (SIGUSR1: stop listening, finish what is in flight), then SIGKILL after timeout."""
    child = _CHILDREN.pop(pid, None)
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return
        if child is None and not Path(f"/proc/{pid}").exists():
            return
        if child is None:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                    return
            except OSError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if child is not None:
        child.wait(5)
