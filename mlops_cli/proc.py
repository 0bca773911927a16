"""Every external program runs through here: a list argv, never a shell, output kept."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import MlopsError


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    output: str

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float | None = None) -> Completed:
    """Run argv to completion; stdout and stderr are captured together."""
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False,
        )
    except FileNotFoundError as exc:
        raise MlopsError(f"program not found: {argv[0]}", hint="is it installed and on PATH?") from exc
    except subprocess.TimeoutExpired as exc:
        raise MlopsError(f"{argv[0]} did not finish within {timeout:.0f} s") from exc
    return Completed(argv=list(argv), returncode=proc.returncode, output=proc.stdout or "")
