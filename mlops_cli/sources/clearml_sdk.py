"""Taming the `clearml` SDK for the ClearML source (clearml.py): its configuration, environment, logging,
import and timeouts.

Connection: host and keys from the `clearml` settings, else CLEARML_API_HOST, CLEARML_API_ACCESS_KEY,
CLEARML_API_SECRET_KEY, CLEARML_FILES_HOST, else a clearml.conf. The SDK's default retries an unreachable
server for minutes, so this module writes a config that includes the user's clearml.conf and bounds
`api.http.retries`, hands it to the SDK through CLEARML_CONFIG_FILE (a private temp file, removed at exit,
never logged), and probes the server once, within `clearml.timeout_s`, before the SDK talks to it. After
that, every SDK call is bounded by `clearml.timeout_s` too: the SDK's HTTP timeouts are set from it, and each
call runs under that deadline (the SDK's own send loop retries a failing server without end).
Models stored on S3 (MinIO) download through the `s3` settings. The SDK reads its configuration once per
process: one process talks to one ClearML server.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import ConfigError, TemporaryError
from . import missing_client

_prepared: dict[str, Any] = {}


def _hocon(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid HOCON quoted string


def _config_text(settings: Any, user_conf: Path | None) -> str:
    """The SDK config: the user's clearml.conf, then bounded retries and the S3 endpoint on top."""
    cfg, s3 = settings.clearml, settings.s3
    lines = [f"include file({_hocon(str(user_conf))})"] if user_conf else []
    n = cfg.retries
    lines += [
        f"api.http.retries {{ total: {n}, connect: {n}, read: {n}, redirect: {n}, status: {n}, backoff_factor: 0.2 }}",
    ]
    if cfg.api_host:
        lines.append(f"api.api_server: {_hocon(cfg.api_host)}")
    if cfg.files_host:
        lines.append(f"api.files_server: {_hocon(cfg.files_host)}")
    if cfg.access_key:
        lines.append(f"api.credentials.access_key: {_hocon(cfg.access_key)}")
    if cfg.secret_key is not None:
        lines.append(f"api.credentials.secret_key: {_hocon(cfg.secret_key.get_secret_value())}")
    if s3.endpoint_url:
        endpoint = urlparse(s3.endpoint_url)
        entry = {
            "host": endpoint.netloc,
            "secure": endpoint.scheme == "https",
            "multipart": False,
            "verify": s3.verify_tls,
        }
        if s3.access_key_id and s3.secret_access_key is not None:
            entry.update(key=s3.access_key_id, secret=s3.secret_access_key.get_secret_value())
        if s3.region:
            entry["region"] = s3.region
        if s3.profile:
            entry["profile"] = s3.profile
        lines.append(f"sdk.aws.s3.credentials: [{json.dumps(entry)}]")
    elif s3.access_key_id and s3.secret_access_key is not None:  # AWS itself: the default keys for every bucket
        lines.append(f"sdk.aws.s3.key: {_hocon(s3.access_key_id)}")
        lines.append(f"sdk.aws.s3.secret: {_hocon(s3.secret_access_key.get_secret_value())}")
    if not s3.endpoint_url and s3.region:
        lines.append(f"sdk.aws.s3.region: {_hocon(s3.region)}")
    if not s3.endpoint_url and s3.profile:
        lines.append(f"sdk.aws.s3.profile: {_hocon(s3.profile)}")
    return "\n".join(lines) + "\n"


def _user_conf(settings: Any) -> Path | None:
    if settings.clearml.config_file is not None:
        if not settings.clearml.config_file.is_file():
            raise ConfigError(f"clearml.config_file {settings.clearml.config_file} not found")
        return settings.clearml.config_file.resolve()
    named = os.environ.get("CLEARML_CONFIG_FILE")
    if named and named != _prepared.get("path"):
        if not Path(named).is_file():
            raise ConfigError(
                f"CLEARML_CONFIG_FILE names {named}, which is not a file",
                hint="point it at an existing clearml.conf or unset it",
            )
        return Path(named).resolve()
    home = os.path.expanduser("~/clearml.conf")
    return Path(home).resolve() if Path(home).is_file() else None


def prepare_sdk(settings: Any) -> str:
    """Put the config and environment the SDK needs in place (once per process); return the API host.

    Keys given as settings go into the private config file only, never into the environment."""
    cfg = settings.clearml
    if _prepared:
        wanted = (cfg.api_host or _prepared["host"]).rstrip("/")
        if wanted != _prepared["host"]:
            raise ConfigError(
                f"this process already talks to ClearML at {_prepared['host']}, not {wanted}",
                hint="run one mlops command per ClearML server",
            )
        return _prepared["host"]
    user_conf = _user_conf(settings)
    host = cfg.api_host or os.environ.get("CLEARML_API_HOST") or _host_from_conf(user_conf)
    if not host:
        raise ConfigError(
            "no ClearML server configured",
            hint="set clearml.api_host, CLEARML_API_HOST or api.api_server in a clearml.conf",
        )
    folder = tempfile.mkdtemp(prefix="mlops-clearml-")  # 0700: only this user can read the keys in it
    path = os.path.join(folder, "clearml.conf")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_config_text(settings, user_conf))
    atexit.register(shutil.rmtree, folder, True)
    env = {
        "CLEARML_CONFIG_FILE": path,
        "CLEARML_API_HOST": host,
        "CLEARML_NO_DEFAULT_SERVER": "1",  # never fall back to the public demo server
        "CLEARML_DISABLE_VAULT_SUPPORT": "1",  # one call less; vaults could override our retries
        "CLEARML_LOG_LEVEL": "CRITICAL",
    }  # its failures become one-line errors here; its log goes to stdout
    if cfg.files_host:
        env["CLEARML_FILES_HOST"] = cfg.files_host
    for name, value in (("CLEARML_API_ACCESS_KEY", cfg.access_key), ("CLEARML_API_SECRET_KEY", cfg.secret_key)):
        if value is not None:  # the settings' keys are in the private config file; the SDK prefers the env's
            os.environ.pop(name, None)
    os.environ.update(env)  # no secret here: servers this process starts inherit the environment
    _prepared.update(host=host.rstrip("/"), path=path)
    return _prepared["host"]


def _host_from_conf(conf: Path | None) -> str | None:
    if conf is None:
        return None
    try:
        # the SDK's own HOCON parser; importing it does not load the SDK's config yet (that is lazy)
        from clearml.utilities.pyhocon import ConfigFactory
    except ImportError:
        raise missing_client("clearml", "clearml") from None
    try:
        return ConfigFactory.parse_file(str(conf)).get_string("api.api_server", None)
    except Exception as exc:  # pyhocon raises many kinds for a malformed file
        raise ConfigError(
            f"cannot read {conf}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None


def quiet_sdk() -> None:
    """The SDK logs its failures to stdout (which --json keeps clean); mlops reports them as one line."""
    for name in list(logging.Logger.manager.loggerDict):
        if name == "clearml" or name.startswith("clearml."):
            logger = logging.getLogger(name)
            logger.setLevel(logging.CRITICAL)
            for handler in logger.handlers:  # records of loggers made later propagate to these
                handler.setLevel(logging.CRITICAL)


def probe(host: str, timeout_s: float) -> None:
    """One HTTP round trip to the server within timeout_s, so an unreachable one fails fast."""
    import httpx

    try:
        budget = min(timeout_s, 10.0) / 2  # connect and read each get half: the whole probe stays within it
        httpx.get(f"{host}/debug.ping", timeout=httpx.Timeout(budget))
    except httpx.HTTPError as exc:
        raise TemporaryError(
            f"ClearML server {host} is unreachable: {type(exc).__name__}" + (f": {exc}" if str(exc) else ""),
            hint="check clearml.api_host / CLEARML_API_HOST and that the server is up",
        ) from None


def bound_sdk_timeouts(timeout_s: float, retries: int) -> tuple[float, float]:
    """Every HTTP attempt of the SDK within timeout_s / (retries + 1), so a call with its retries stays within
    timeout_s. The SDK's own are 10 s for the first request and 300 s (read) after (session.py)."""
    from clearml.backend_api.session import Session

    per_attempt = timeout_s / (retries + 1)
    pair = (per_attempt / 2, per_attempt / 2)  # connect, read
    Session._session_initial_timeout = pair
    Session._session_timeout = pair
    Session._write_session_timeout = pair
    return pair


class Deadline(Exception):
    pass


def within(timeout_s: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), given up on after timeout_s: the SDK retries a failing server in a loop of its own
    (backend_interface/base.py `_send`), which no HTTP setting bounds. A call given up on is left to finish in
    a daemon thread; the command fails at once."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=call, name="mlops-clearml-call", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise Deadline()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def connect(settings: Any) -> tuple[str, Any]:
    """(the API host, the `clearml` module) ready to use: config and environment in place, HTTP timeouts bounded,
    the server probed once."""
    host = prepare_sdk(settings)  # before the import: the SDK reads its config from the env
    try:
        import clearml
    except ImportError:
        raise missing_client("clearml", "clearml") from None
    bound_sdk_timeouts(settings.clearml.timeout_s, settings.clearml.retries)
    probe(host, settings.clearml.timeout_s)
    return host, clearml
