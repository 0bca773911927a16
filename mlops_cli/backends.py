"""Name -> backend registries with lazy imports, so `mlops --help` never loads a heavy client."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError


def load(kind: str, name: str, table: dict[str, str]) -> Any:
    """Import and return the object registered as `name` ("module:attr") in `table`."""
    if name not in table:
        known = ", ".join(sorted(table)) or "none yet"
        raise ConfigError(f"unknown {kind} {name!r}; known: {known}")
    module_name, _, attr = table[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        from .extras import EXTRA_OF, install_line

        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        raise ConfigError(
            f"the {kind} {name!r} needs a package that is not installed: {exc.name}",
            hint=install_line(extra) if extra else f"pip install {exc.name}",
        ) from exc
    return getattr(module, attr)
