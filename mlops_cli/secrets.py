"""Secrets: read once from where they are given, never shown.

A secret setting is a pydantic `SecretStr` (printed as `**********`), given inline (`MLOPS_*` environment,
never a file in git) or as `*_file` (a mounted secret); `secret_value` reads either, stripped. What goes to a
terminal, a log, a Slack thread or state.json passes through `redact` (known secret values) or
`url_without_userinfo` (a `user:password@` in a URL) first.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from .errors import ConfigError

MASK = "***"
_USERINFO = re.compile(r"^([^/]*//)?[^/@]*@")


def secret_value(value: SecretStr | None, file: Path | None, key: str) -> str | None:
    """A secret given inline or in a file (a mounted secret), stripped; None when neither or empty.

    `key` names the file's setting in the one-line error when the file cannot be read."""
    if value is not None:
        return value.get_secret_value().strip() or None
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(f"{key} {file}: {exc.strerror}") from None
    return None


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every occurrence of each non-empty secret replaced by ***, longest first (so that a secret
    that contains another is masked whole)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def url_without_userinfo(url: str) -> str:
    """`url` without a `user:password@` part: what may be shown of a server address."""
    return _USERINFO.sub(r"\1", url, count=1)
