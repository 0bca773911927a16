"""Every external program runs through here: a list argv, never a shell, output kept."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import MlopsError


class ProgramTimeout(MlopsError):
    """A program ran past its timeout (and was killed); the caller names the setting that bounds it."""


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    output: str

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    stream: bool = False,
) -> Completed:
    """Run argv to completion; stdout and stderr are captured together.

    With `stream`, each line is also shown as it comes (ui.output_line, on stderr; not with --quiet),
    so a long step (an image build, pip, pytest) shows its progress in a CI log instead of nothing."""
    if stream:
        return _run_streaming(argv, cwd=cwd, env=env, timeout=timeout)
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise MlopsError(f"program not found: {argv[0]}", hint="is it installed and on PATH?") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProgramTimeout(f"{argv[0]} did not finish within {timeout:.0f} s") from exc
    return Completed(argv=list(argv), returncode=proc.returncode, output=proc.stdout or "")


def _run_streaming(
    argv: list[str], *, cwd: Path | None, env: dict[str, str] | None, timeout: float | None
) -> Completed:
    from .ui import output_line

    lines: list[str] = []
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError as exc:
        raise MlopsError(f"program not found: {argv[0]}", hint="is it installed and on PATH?") from exc

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            output_line(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    with proc:  # closes the pipe whatever happens
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join(timeout=5)
            raise ProgramTimeout(f"{argv[0]} did not finish within {timeout:.0f} s") from None
        except BaseException:  # Ctrl-C / SIGTERM: do not leave the child running
            proc.kill()
            proc.wait()
            raise
        reader.join(timeout=5)
    return Completed(argv=list(argv), returncode=proc.returncode, output="".join(lines))
