"""`mlops demo --port` in a workdir with a space: it says what it leaves running and how to stop
it, with the path shell-quoted so the printed commands work as pasted."""

from __future__ import annotations

import json
import shlex
import socket

import httpx
import pytest
from helpers import free_port, run_cli

pytestmark = pytest.mark.integration


def test_demo_on_a_port_says_what_it_leaves_running(tmp_path):
    port = free_port()
    while True:  # PORT+1 serves test: both must be free
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            port = free_port()
    workdir = tmp_path / "my demo"
    try:
        result = run_cli("-q", "demo", "--workdir", str(workdir), "--port", str(port), cwd=tmp_path, timeout=240)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        quoted = shlex.quote(str(workdir))
        assert quoted.startswith("'")
        assert (
            f"left running: the test server at http://127.0.0.1:{port + 1}, the prod server at http://127.0.0.1:{port}"
            in out
        )
        assert (
            f"stop them: mlops stop --workdir {quoted}" in out and f"see them:  mlops status --workdir {quoted}" in out
        )
        assert (
            httpx.post(
                f"http://127.0.0.1:{port}/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10
            ).status_code
            == 200
        )
        assert httpx.get(f"http://127.0.0.1:{port + 1}/health/ready", timeout=10).status_code == 200
        # the printed stop line works as pasted into a shell
        stop_line = next(line for line in out.splitlines() if line.startswith("stop them: ")).removeprefix(
            "stop them: "
        )
        argv = shlex.split(stop_line)
        stopped = run_cli(*argv[1:], cwd=tmp_path)
        assert stopped.returncode == 0 and "stopped prod" in stopped.stdout and "stopped test" in stopped.stdout
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
        # status from the project directory points at the demo's workdir
        hint = json.loads(run_cli("--json", "status", cwd=tmp_path).stdout)["hint"]
        assert f"mlops status --workdir {shlex.quote(workdir.name)}" in hint
    finally:
        run_cli("stop", "--workdir", str(workdir), timeout=60)
