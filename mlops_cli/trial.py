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
from pathlib import Path

import serving.spec

from .config import Settings
from .state import CheckRecord
from .targets.local import server_environ

RESULT_FILE = ".trial-result.json"
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _environ() -> dict[str, str]:
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


def trial_run(bundle: Path, settings: Settings) -> CheckRecord:
    """Load the bundle's model and answer its examples as the server would; the outcome as a check."""
    cfg = settings.validation
    result = bundle / RESULT_FILE
    argv = [sys.executable, "-m", "serving.modules.trial", str(bundle), str(result),
            "--memory-mb", str(cfg.load_memory_mb)]
    proc = subprocess.Popen(argv, cwd=bundle, env=_environ(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=cfg.load_timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return CheckRecord(name="trial run", passed=False,
                           detail=f"loading the model and answering its examples took longer than "
                                  f"{cfg.load_timeout_s:g} s (validation.load_timeout_s)")
    except BaseException:
        _kill(proc)
        raise
    try:
        outcome = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exit code {proc.returncode}")
        return CheckRecord(name="trial run", passed=False,
                           detail=f"loading the model crashed the process ({how}){_last_line(output)}")
    finally:
        result.unlink(missing_ok=True)
    problem = outcome.get("problem")
    if problem:
        if "MemoryError" in problem:
            problem += f" (validation.load_memory_mb is {cfg.load_memory_mb})"
        return CheckRecord(name="trial run", passed=False, detail=f"the server would refuse it: {problem}")
    count = outcome.get("examples", 0)
    detail = (f"loaded as the server loads it; {count} example request(s) answered as schema.outputs says"
              if count else "loaded as the server loads it (no example requests registered to run)")
    return CheckRecord(name="trial run", passed=True, detail=detail)
