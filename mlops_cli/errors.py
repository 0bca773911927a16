"""The one error hierarchy. cli.py is the only place that turns these into exit codes."""

from __future__ import annotations


class MlopsError(Exception):
    """A failure the user can act on: shown as one line, never as a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(MlopsError):
    """Bad configuration: a malformed file, an unknown or ill-typed key."""

    exit_code = 2


class UsageError(MlopsError):
    """Bad input on the command line or a reference that does not resolve."""

    exit_code = 2


class NotFoundError(UsageError):
    """A model, version or file that does not exist."""


class PrerequisiteError(MlopsError):
    """A stage ran before the stage whose output it needs."""

    exit_code = 3


class StageFailed(MlopsError):
    """A stage ran and its check failed (below threshold, smoke test failed, ...)."""

    exit_code = 1


class TemporaryError(MlopsError):
    """A failure worth retrying with backoff (a registry briefly down, a 5xx)."""

    exit_code = 75
