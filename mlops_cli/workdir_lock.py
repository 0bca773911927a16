"""The workdir lock: one `mlops` run at a time changes a workdir's state and what it deploys.

An exclusive `fcntl.flock` on `<workdir>/.mlops.lock`, held for a stage's whole run (and for
`mlops pipeline run` and `mlops stop` as a whole). The holder writes its PID, command and start
time into the file, so a second run that finds it locked can say who holds it. The kernel drops
the lock when the holder exits, even by `kill -9`: a lock is never left behind. A second run
waits up to `lock_wait_s` (0: fails at once) and then fails with exit code 75 (retry later).
Re-entrant within one thread: `pipeline run` holds it while each stage takes it again; another
thread of the same process waits like another process would. The descriptor is not inherited:
servers a stage starts (fork + exec) never carry the lock beyond the CLI's life.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import TemporaryError
from .state import now

LOCK_FILE = ".mlops.lock"
POLL_S = 0.2

_held: dict[tuple[str, int], int] = {}  # (resolved workdir, thread) -> nesting depth
_fds: dict[tuple[str, int], int] = {}


class WorkdirBusy(TemporaryError):
    """Another run holds the workdir lock."""


def holder(workdir: Path) -> dict | None:
    """What the lock file says about its holder (it may be stale if nobody holds the lock)."""
    try:
        return json.loads((Path(workdir) / LOCK_FILE).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def busy(workdir: Path) -> dict | None:
    """The holder's record if another process holds the lock now (None when free or held by us)."""
    key = str(Path(workdir).resolve())
    path = Path(key) / LOCK_FILE
    if any(depth and held == key for (held, _), depth in list(_held.items())) or not path.exists():
        return None  # held by this process
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder(Path(key)) or {}
    finally:
        os.close(fd)  # closing releases a lock we took
    return None


def _describe(info: dict | None) -> str:
    if not info:
        return "another mlops process"
    return f"pid {info.get('pid')} ({info.get('command')}, since {info.get('started_at')})"


@contextmanager
def hold(workdir: Path, command: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the workdir's lock for the block; WorkdirBusy naming the holder if it stays taken for wait_s."""
    key = str(Path(workdir).resolve())
    mine = (key, threading.get_ident())
    if _held.get(mine):
        _held[mine] += 1
        try:
            yield
        finally:
            _held[mine] -= 1
        return
    Path(key).mkdir(parents=True, exist_ok=True)
    path = Path(key) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise WorkdirBusy(
                    f"workdir {key} is in use by {_describe(holder(Path(key)))}",
                    hint="wait for it to finish, or set lock_wait_s / MLOPS_LOCK_WAIT_S to wait",
                ) from None
            if not announced:
                from .ui import progress

                progress(f"waiting up to {wait_s:g} s for {_describe(holder(Path(key)))} to release {key}")
                announced = True
            time.sleep(POLL_S)
    info = {"pid": os.getpid(), "command": command, "argv": sys.argv[1:], "started_at": now()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _held[mine], _fds[mine] = 1, fd
    try:
        yield
    finally:
        _held.pop(mine, None)
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock
        _fds.pop(mine, None)
