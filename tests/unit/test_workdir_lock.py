"""The workdir lock: exclusive across processes, re-entrant within one, names its holder."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mlops_cli.workdir_lock import WorkdirBusy, busy, hold

TRY = """
import sys
from mlops_cli.workdir_lock import WorkdirBusy, hold
try:
    with hold(sys.argv[1], "mlops other", float(sys.argv[2])):
        print("acquired")
except WorkdirBusy as exc:
    print(exc.exit_code, exc.message)
"""


def other_process(workdir, wait_s: float) -> str:
    done = subprocess.run(
        [sys.executable, "-c", TRY, str(workdir), str(wait_s)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return done.stdout.strip()


def test_a_second_process_fails_at_once_naming_the_holder(tmp_path):
    assert busy(tmp_path) is None
    with hold(tmp_path, "mlops rolling-update"):
        with hold(tmp_path, "mlops rolling-update"):  # re-entrant: pipeline run -> each stage
            start = time.monotonic()
            answer = other_process(tmp_path, 0)
            assert time.monotonic() - start < 30
        assert answer.startswith(
            f"75 workdir {tmp_path.resolve()} is in use by pid {os.getpid()} (mlops rolling-update, since "
        )
        assert other_process(tmp_path, 0).startswith("75 ")  # still held after the inner block
    assert other_process(tmp_path, 0) == "acquired"  # released


def test_a_second_process_waits_its_bounded_time(tmp_path):
    with hold(tmp_path, "mlops pipeline run"):
        start = time.monotonic()
        assert other_process(tmp_path, 1.0).startswith("75 ")
        assert time.monotonic() - start >= 1.0


def test_busy_reports_another_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom mlops_cli.workdir_lock import hold\n"
            f"with hold({str(tmp_path)!r}, 'mlops stop'):\n    print('held', flush=True)\n"
            "    time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        info = busy(tmp_path)
        assert info is not None and info["pid"] == holder.pid and info["command"] == "mlops stop"
        with pytest.raises(WorkdirBusy, match=rf"in use by pid {holder.pid} \(mlops stop, since "):
            with hold(tmp_path, "mlops status"):
                pass
    finally:
        holder.kill()  # kill -9: the kernel drops the lock with the process
        holder.wait(timeout=10)
        holder.stdout.close()
    assert busy(tmp_path) is None
    with hold(tmp_path, "mlops status"):
        pass


def test_another_thread_of_the_same_process_is_not_let_in(tmp_path):
    """Re-entrant per thread only: a second thread (a service running stages) waits like another process."""
    import threading

    seen: list[str] = []

    def second() -> None:
        try:
            with hold(tmp_path, "mlops second", 0):
                seen.append("acquired")
        except WorkdirBusy as exc:
            seen.append(exc.message)

    with hold(tmp_path, "mlops first"):
        with hold(tmp_path, "mlops first, nested"):  # the same thread again: re-entrant
            worker = threading.Thread(target=second)
            worker.start()
            worker.join(timeout=30)
    assert len(seen) == 1 and seen[0].startswith(f"workdir {tmp_path.resolve()} is in use by pid {os.getpid()}"), seen
    worker = threading.Thread(target=second)  # released: now it gets it
    worker.start()
    worker.join(timeout=30)
    assert seen[-1] == "acquired"


def test_the_lock_descriptor_is_not_inherited_by_servers_a_stage_starts(tmp_path):
    with hold(tmp_path, "mlops rolling-update"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            held = [os.readlink(f"/proc/{child.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{child.pid}/fd")]
        finally:
            child.kill()
            child.wait(timeout=30)
    assert str(tmp_path.resolve() / ".mlops.lock") not in held
    assert other_process(tmp_path, 0) == "acquired"
