"""validate-model's trial run: the server's own code loads the model and answers the examples, in a child process.

Loading a model runs its code (a pickle, a .py model), so it never happens in the toolkit's process: the
child (`python -m serving.modules.trial`) gets no settings or credentials in its environment, bounds its own
address space (validation.load_memory_mb) and is killed, with anything it started, after
validation.load_timeout_s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import serving.spec

from .extras import FRAMEWORK_MODULES, require
from .settings import Settings
from .state import CheckRecord

RESULT_FILE = ".child-result-"
TRIAL_STACK = ("numpy", "prometheus_client")  # what serving.modules.trial imports besides the model's framework
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _environ() -> dict[str, str]:
    # here, not at the top: targets.local imports httpx, which a module that only imports this one
    # (assemble-server's, via validate_model) never needs
    from .targets.local import server_environ

    env = server_environ(os.environ)
    root = str(Path(serving.spec.__file__).resolve().parents[1])  # this toolkit's serving, as assembled into bundles
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for name, value in SINGLE_THREADED.items():
        env.setdefault(name, value)
    return env


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return f": {lines[-1][:300]}" if lines else ""


def run_bounded(
    module: str, args: list[str], cwd: Path, settings: Settings, doing: str
) -> tuple[dict[str, Any] | None, str | None]:
    """`python -m module ARGS... RESULT` in a clean, bounded child; (the JSON it wrote in RESULT, None), or
    (None, why it did not finish: too slow or crashed, in words)."""
    cfg = settings.validation
    cwd = Path(cwd).resolve()  # the child runs in cwd: every path it is given is absolute
    fd, name = tempfile.mkstemp(prefix=RESULT_FILE, dir=cwd)
    os.close(fd)
    result = Path(name)
    argv = [sys.executable, "-m", module, *args, str(result)]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=_environ(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=cfg.load_timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return None, f"{doing} took longer than {cfg.load_timeout_s:g} s (validation.load_timeout_s)"
        except BaseException:
            _kill(proc)
            raise
        try:
            return json.loads(result.read_text(encoding="utf-8")), None
        except (OSError, ValueError):
            how = f"exit code {proc.returncode}"
            if proc.returncode < 0:
                try:
                    how = f"killed by {signal.Signals(-proc.returncode).name}"
                except ValueError:
                    how = f"killed by signal {-proc.returncode}"
            return None, f"{doing} crashed the process ({how}){_last_line(output)}"
    finally:
        result.unlink(missing_ok=True)


def memory_note(problem: str, settings: Settings) -> str:
    if "MemoryError" in problem:
        return problem + f" (validation.load_memory_mb is {settings.validation.load_memory_mb})"
    return problem


def require_loader(
    framework: str, doing: str = "validate-model's trial run loads the model with the server's code"
) -> None:
    """The one-line MissingExtra when this venv lacks what the server's code needs to load a `framework` model."""
    require(TRIAL_STACK, doing, "serve")
    require(FRAMEWORK_MODULES.get(framework, ()), f"{doing} (a {framework} model)")


def trial_run(bundle: Path, settings: Settings, framework: str | None = None) -> CheckRecord:
    """Load the bundle's model and answer its examples as the server would; the outcome as a check."""
    if framework is not None:
        require_loader(framework)
    bundle = Path(bundle).resolve()
    outcome, failure = run_bounded(
        "serving.modules.trial",
        [str(bundle), "--memory-mb", str(settings.validation.load_memory_mb)],
        bundle,
        settings,
        "loading the model and answering its examples",
    )
    if outcome is None:
        return CheckRecord(name="trial run", passed=False, detail=str(failure))
    problem = outcome.get("problem")
    if problem:
        return CheckRecord(
            name="trial run", passed=False, detail=f"the server would refuse it: {memory_note(problem, settings)}"
        )
    count = outcome.get("examples", 0)
    detail = (
        f"loaded as the server loads it; {count} example request(s) answered as schema.outputs says"
        if count
        else "loaded as the server loads it (no example requests registered to run)"
    )
    return CheckRecord(name="trial run", passed=True, detail=detail)
