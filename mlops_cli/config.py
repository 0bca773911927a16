"""Loading the settings. Precedence: defaults < mlops.yaml < MLOPS_* environment < command-line flags.

The settings models are mlops_cli.settings; an unknown or ill-typed key is an error that names the key
and where it came from. Nested keys come from the environment as
`MLOPS_<SECTION>__<KEY>`, e.g. `MLOPS_DEPLOY__TEST__PORT=9000`; list and mapping values as JSON.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .settings import Settings  # the loader's result, the one settings name imported from here

DEFAULT_CONFIG_FILE = "mlops.yaml"
ENV_PREFIX = "MLOPS_"
NOT_CONFIG = {
    "MLOPS_REQUIRE_INTEGRATION",
    "MLOPS_TEST_PAUSE_AT",
}  # MLOPS_ variables that are not settings (the test suite's)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})", hint="save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _env_value(raw: str) -> Any:
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _read_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """MLOPS_A__B=v -> {"a": {"b": v}}; an unknown MLOPS_ variable is an error (a typo must not pass)."""
    data: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if path[0] not in Settings.model_fields:
            raise ConfigError(f"{name}: unknown setting {path[0]!r} (known: {', '.join(Settings.model_fields)})")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another MLOPS_ variable")
        node[path[-1]] = _env_value(raw)
        names[path] = name
    return data, names


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _has(data: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = data
    for part in loc:
        if isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]  # a list item (canary_analysis.templates.X.metrics.0)
            continue
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _describe(exc: ValidationError, sources: list[tuple[str, dict[str, Any], Any]]) -> str:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "(top level)"
    where = "defaults"
    for label, data, naming in reversed(sources):
        if _has(data, loc) or (err["type"] == "missing" and _has(data, loc[:-1])):
            where = naming(loc) if callable(naming) else label
            break
    if err["type"] == "extra_forbidden":
        parent: Any = Settings  # a settings class while the path walks through models
        message = f"unknown key {key!r}"
        for part in loc[:-1]:
            field = parent.model_fields.get(part)
            parent = field.annotation if field is not None else None
            if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
                break
        if isinstance(parent, type) and issubclass(parent, BaseModel):
            message += f" (known here: {', '.join(parent.model_fields)})"
    else:
        message = f"{key}: {err['msg'].removeprefix('Value error, ')}"
    more = len(exc.errors()) - 1
    return f"{where}: {message}" + (f" (and {more} more)" if more else "")


def load_settings(
    config_file: Path | None = None, flags: dict[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from defaults, the config file, MLOPS_* variables and flags."""
    environ = os.environ if environ is None else environ
    if config_file is None and Path(DEFAULT_CONFIG_FILE).is_file():
        config_file = Path(DEFAULT_CONFIG_FILE)
    elif config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} not found")
    file_data = _read_file(config_file) if config_file is not None else {}
    env_data, env_names = _read_env(environ)
    flag_data = flags or {}

    def env_name(loc: tuple[str, ...]) -> str:
        for length in range(len(loc), 0, -1):
            if loc[:length] in env_names:
                return env_names[loc[:length]]
        return "environment"

    sources = [
        (str(config_file), file_data, None),
        ("environment", env_data, env_name),
        ("command line", flag_data, None),
    ]
    merged: dict[str, Any] = {}
    for _, data, _ in sources:
        merged = _merge(merged, data)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None
    check_backend_names(
        settings,
        lambda loc: next(
            (
                naming(loc) if callable(naming) else label
                for label, data, naming in reversed(sources)
                if _has(data, loc)
            ),
            "defaults",
        ),
    )
    check_analysis_names(settings)
    return settings


# --- backend names, checked at load against their registries (the registries only: no backend is imported) ---


def did_you_mean(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_backend_names(settings: Settings, origin: Callable[[tuple[str, ...]], str]) -> None:
    """deploy.target, build.builder, notify.notifiers, relay.sinks and the model's source: names their registries
    know; ConfigError naming the key, where it was set, the known names and the closest one."""
    from .builders import BUILDERS
    from .notifiers import NOTIFIERS
    from .sources import SOURCES
    from .targets import TARGETS

    model = settings.model or ""
    scheme = model.partition(":")[0] if re.match(r"^[A-Za-z][A-Za-z0-9_-]*:(?!//)", model) else None
    checks = [
        (("deploy", "target"), "deploy target", [settings.deploy.target], TARGETS),
        (("build", "builder"), "image builder", [settings.build.builder] if settings.build.builder else [], BUILDERS),
        (("notify", "notifiers"), "notifier", settings.notify.notifiers, NOTIFIERS),
        (("relay", "sinks"), "notifier", settings.relay.sinks, NOTIFIERS),
        (("model",), "model source", [scheme] if scheme else [], SOURCES),
    ]
    for loc, kind, names, table in checks:
        for name in names:
            if name not in table:
                raise ConfigError(
                    f"{origin(loc)}: {'.'.join(loc)}: unknown {kind} {name!r}; known: "
                    f"{', '.join(sorted(table))}{did_you_mean(name, table)}"
                )


def check_analysis_names(settings: Settings) -> None:
    """Each `{analysis: NAME}` step of rollout.steps names a template of canary_analysis.templates."""
    known = set(settings.canary_analysis.templates)
    for index, step in enumerate(settings.rollout.steps):
        name = step.get("analysis")
        if name is not None and name not in known:
            raise ConfigError(
                f"rollout.steps: step {index + 1}: unknown analysis template {name!r}; known: "
                f"{', '.join(sorted(known))}{did_you_mean(name, known)}"
            )
