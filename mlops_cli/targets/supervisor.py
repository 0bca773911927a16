"""The local target's supervisor: keeps one model server up, restarting it when it dies while serving.

Run by the local target as ``python -IS supervisor.py --status FILE -- SERVER_ARGV...`` (standard
library only: the server's environment does not carry the toolkit; ``-S``: no site, whose start-up
would delay the server's). It starts the server first, before it imports what else it needs, and
forwards SIGTERM/SIGINT (stop: no restart) and SIGUSR1 (the handover: listen) to it. When the
server dies after its handover without being asked to stop (a crash, the OOM killer, kill -9), it
is started again at once, listening without waiting for a handover, under the same --instance
identity; at most MAX_RESTARTS within WINDOW_S, then the supervisor gives up and exits 1. A server
that fails before its handover is not restarted: its deployer sees the failure. The server dies
with its supervisor (PR_SET_PDEATHSIG). FILE is rewritten atomically after each start:
``{"pid", "server_pid", "restarts", "last_exit", "restarted_at", "gave_up"}`` — what `mlops status`
shows.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

MAX_RESTARTS = 5
WINDOW_S = 60.0
BACKOFF_S = 0.2
PR_SET_PDEATHSIG = 1
SUPERVISOR_PID = os.getpid()


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != SUPERVISOR_PID:  # the supervisor died before prctl took effect: never run unsupervised
        os._exit(1)


def spawn(argv: list[str]) -> int:
    """Start the server as our child (fork and exec: what subprocess.Popen does, without importing it
    before the server starts); its pid. A program that cannot be run exits 127 with one line."""
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: nothing here may return into the supervisor's code
        _die_with_parent()
        for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores them; as Popen does, the server starts with defaults
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        os.execvp(argv[0], argv)
    except BaseException as exc:
        os.write(2, f"supervisor: cannot run {argv[0]}: {exc}\n".encode(errors="replace"))
    finally:
        os._exit(127)


def wait(pid: int) -> int:
    """The child's exit code, or -N when a signal N ended it (as Popen.wait says it)."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _write(path: str, info: dict) -> None:
    import json

    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(info) + "\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "--status" or argv[2] != "--":
        print("usage: supervisor.py --status FILE -- SERVER_ARGV...", file=sys.stderr)
        return 2
    status_path, server_argv = argv[1], argv[3:]
    flags = {"stopping": False, "handed_over": "--await-handover" not in server_argv}
    child = {"pid": spawn(server_argv)}

    def forward(signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            flags["stopping"] = True
        elif signum == signal.SIGUSR1:
            flags["handed_over"] = True
        try:
            os.kill(child["pid"], signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, forward)
    # a signal that came before the handlers (the child was starting) had the default action: for
    # SIGTERM/SIGINT the supervisor's end, and its server's with it (PR_SET_PDEATHSIG); SIGUSR1
    # comes only once the server said it loaded, which takes it longer than the lines above

    import time  # what the rest needs: after the server started
    from datetime import datetime, timezone
    from typing import Any

    info: dict[str, Any] = {
        "pid": os.getpid(),
        "server_pid": child["pid"],
        "restarts": 0,
        "last_exit": None,
        "restarted_at": None,
        "gave_up": False,
    }
    _write(status_path, info)
    recent: list[float] = []
    while True:
        code = wait(child["pid"])
        if flags["stopping"] or not flags["handed_over"]:
            return code if code >= 0 else 128 - code
        now = time.monotonic()
        recent = [t for t in recent if now - t < WINDOW_S]
        info["last_exit"] = code
        if len(recent) >= MAX_RESTARTS:
            info["gave_up"] = True
            _write(status_path, info)
            print(
                f"supervisor: the server died {MAX_RESTARTS + 1} times within {WINDOW_S:g} s; giving up",
                file=sys.stderr,
                flush=True,
            )
            return 1
        recent.append(now)
        print(
            f"supervisor: the server (pid {child['pid']}) died with exit code {code}; restarting it",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(BACKOFF_S)
        if flags["stopping"]:
            return 0
        child["pid"] = spawn([a for a in server_argv if a != "--await-handover"])
        if flags["stopping"]:  # a stop that arrived while the new server was being started went to the old one
            os.kill(child["pid"], signal.SIGTERM)
        info.update(
            server_pid=child["pid"],
            restarts=info["restarts"] + 1,
            restarted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        _write(status_path, info)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
