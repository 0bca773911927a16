"""Progress for humans goes to stderr, so stdout stays clean for --json."""

from __future__ import annotations

import sys

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def progress(message: str) -> None:
    """One line of progress on stderr."""
    if not _quiet:
        print(f"  · {message}", file=sys.stderr, flush=True)


def output_line(line: str) -> None:
    """One line of a program's output as it runs (buildah, pip, pytest), indented under the progress lines."""
    if not _quiet:
        print(f"    | {line}", file=sys.stderr, flush=True)
