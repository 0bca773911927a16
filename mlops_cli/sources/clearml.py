"""The ClearML source: a model by its ID, through the real `clearml` SDK.

What a ClearML model gives (names as in the SDK):
  Model(ID).name, .tags, .framework, .url, .get_all_metadata(), .get_local_copy()
  the parent task (Model.task): get_reported_single_values() and the last value of each scalar series
  as metrics; its artifacts `schema`, `examples`, `reference` (JSON files) where the model's metadata
  does not carry them.
The model's metadata carries what the local store keeps per version: `sha256` (required: validation pins
it), `schema`, `examples`, `reference`, `labels`, `class_name`, `task`, `framework`, `version` (JSON values).
Metrics: the task's scalars (`title/series`, and `title` alone where title == series), its single values,
and `metrics.NAME` entries of the metadata for what the task does not report (a disagreement fails).
`modules` (metadata or task JSON artifact): extra modules; their files are task artifacts or URIs.

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

import ast
import atexit
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from pydantic import ValidationError

from ..errors import ConfigError, MlopsError, NotFoundError, StageFailed, TemporaryError
from . import ModelMetadata, ModelRef, ModuleFile, invalid_metadata, missing_client

FRAMEWORKS = {"scikitlearn": "sklearn", "scikit-learn": "sklearn", "sklearn": "sklearn", "joblib": "sklearn",
              "python": "python", "custom": "python", "onnx": "onnx"}
JSON_FIELDS = ("schema", "examples", "reference", "labels", "modules")
_prepared: dict[str, Any] = {}
# result_subcode of a 400 for an unknown ID (clearml-server apiserver/apierrors/errors.conf, bad_request)
NOT_FOUND_SUBCODES = {"task": 101, "model": 201}


def _hocon(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid HOCON quoted string


def _config_text(settings: Any, user_conf: Optional[Path]) -> str:
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
        entry = {"host": endpoint.netloc, "secure": endpoint.scheme == "https", "multipart": False,
                 "verify": s3.verify_tls}
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


def _user_conf(settings: Any) -> Optional[Path]:
    if settings.clearml.config_file is not None:
        if not settings.clearml.config_file.is_file():
            raise ConfigError(f"clearml.config_file {settings.clearml.config_file} not found")
        return settings.clearml.config_file.resolve()
    named = os.environ.get("CLEARML_CONFIG_FILE")
    if named and named != _prepared.get("path"):
        if not Path(named).is_file():
            raise ConfigError(f"CLEARML_CONFIG_FILE names {named}, which is not a file",
                              hint="point it at an existing clearml.conf or unset it")
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
            raise ConfigError(f"this process already talks to ClearML at {_prepared['host']}, not {wanted}",
                              hint="run one mlops command per ClearML server")
        return _prepared["host"]
    user_conf = _user_conf(settings)
    host = cfg.api_host or os.environ.get("CLEARML_API_HOST") or _host_from_conf(user_conf)
    if not host:
        raise ConfigError("no ClearML server configured",
                          hint="set clearml.api_host, CLEARML_API_HOST or api.api_server in a clearml.conf")
    folder = tempfile.mkdtemp(prefix="mlops-clearml-")  # 0700: only this user can read the keys in it
    path = os.path.join(folder, "clearml.conf")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_config_text(settings, user_conf))
    atexit.register(shutil.rmtree, folder, True)
    env = {"CLEARML_CONFIG_FILE": path, "CLEARML_API_HOST": host,
           "CLEARML_NO_DEFAULT_SERVER": "1",          # never fall back to the public demo server
           "CLEARML_DISABLE_VAULT_SUPPORT": "1",      # one call less; vaults could override our retries
           "CLEARML_LOG_LEVEL": "CRITICAL"}  # its failures become one-line errors here; its log goes to stdout
    if cfg.files_host:
        env["CLEARML_FILES_HOST"] = cfg.files_host
    for name, value in (("CLEARML_API_ACCESS_KEY", cfg.access_key), ("CLEARML_API_SECRET_KEY", cfg.secret_key)):
        if value is not None:  # the settings' keys are in the private config file; the SDK prefers the env's
            os.environ.pop(name, None)
    os.environ.update(env)  # no secret here: servers this process starts inherit the environment
    _prepared.update(host=host.rstrip("/"), path=path)
    return _prepared["host"]


def _host_from_conf(conf: Optional[Path]) -> Optional[str]:
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
        raise ConfigError(f"cannot read {conf}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


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
        raise TemporaryError(f"ClearML server {host} is unreachable: {type(exc).__name__}"
                             + (f": {exc}" if str(exc) else ""),
                             hint="check clearml.api_host / CLEARML_API_HOST and that the server is up") from None


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


class _Deadline(Exception):
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
        raise _Deadline()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _value(entry: dict[str, Any]) -> Any:
    raw = entry.get("value")
    if not isinstance(raw, str):
        return raw
    kind = entry.get("type")
    if kind in ("float", "int"):
        try:
            return float(raw)
        except ValueError:
            return raw
    if kind in ("dict", "list", "tuple") or raw[:1] in "[{":
        for parse in (json.loads, ast.literal_eval):
            try:
                return parse(raw)
            except (ValueError, SyntaxError, TypeError):
                continue
    return raw


def _task_metrics(task: Any) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for title, series in (task.get_reported_scalars() or {}).items():
        for name, points in (series or {}).items():
            ys = points.get("y") or []
            if ys and isinstance(ys[-1], (int, float)):
                metrics[f"{title}/{name}"] = float(ys[-1])
                if name == title:
                    metrics[title] = float(ys[-1])
    try:
        singles = task.get_reported_single_values() or {}
    except ValueError:  # a server older than API 2.20 has no single values
        singles = {}
    metrics.update({k: float(v) for k, v in singles.items() if isinstance(v, (int, float))})
    return metrics


class ClearMLSource:
    """The ModelSource over a ClearML server."""

    def __init__(self, settings: Any):
        self.settings = settings
        self._sdk: Any = None
        self.host = ""

    def _connect(self) -> Any:
        if self._sdk is None:
            self.host = prepare_sdk(self.settings)  # before the import: the SDK reads its config from the env
            try:
                import clearml
            except ImportError:
                raise missing_client("clearml", "clearml") from None
            bound_sdk_timeouts(self.settings.clearml.timeout_s, self.settings.clearml.retries)
            probe(self.host, self.settings.clearml.timeout_s)
            self._sdk = clearml
        quiet_sdk()
        return self._sdk

    def _sdk_call(self, what: str, model_id: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One SDK operation within clearml.timeout_s; its failures as one-line errors."""
        timeout = self.settings.clearml.timeout_s
        try:
            return within(timeout, fn, *args, **kwargs)
        except MlopsError:
            raise
        except _Deadline:
            raise TemporaryError(f"ClearML server {self.host} did not answer within {timeout:g} s ({what})",
                                 hint="check the server; clearml.timeout_s bounds each call") from None
        except Exception as exc:
            raise self._failure(exc, model_id) from None
        finally:
            quiet_sdk()

    def _model(self, model_id: str) -> Any:
        sdk = self._connect()
        model = sdk.Model(model_id)
        # the SDK's own lazy load: models.get_by_id (and auth.login first)
        data = self._sdk_call(f"reading model {model_id}", model_id, model._get_model_data)
        if data is None or not getattr(data, "id", None):
            raise NotFoundError(f"ClearML model {model_id} not found on {self.host}")
        return model

    def _failure(self, exc: Exception, model_id: str) -> Exception:
        """Classified by what the SDK reports: the API's result code and subcode (a SendError's CallResult), the
        HTTP status of a failed login, or the type of the network error; never by words of the message."""
        import requests

        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        unreachable = TemporaryError(f"ClearML server {self.host} is unreachable or failing: {text}",
                                     hint=f"gave up after {self.settings.clearml.retries} retries (clearml.retries)")
        refused = ConfigError(f"ClearML server {self.host} refused the credentials",
                              hint="check clearml.access_key / CLEARML_API_ACCESS_KEY and the secret key")
        meta = getattr(getattr(exc, "result", None), "meta", None)  # clearml.backend_interface.session.SendError
        if meta is not None:
            code, subcode = int(meta.result_code or 0), int(meta.result_subcode or 0)
            message = meta.result_msg or text
            if code == 400 and subcode in (NOT_FOUND_SUBCODES["model"], NOT_FOUND_SUBCODES["task"]):
                what = "model" if subcode == NOT_FOUND_SUBCODES["model"] else "task of model"
                return NotFoundError(f"ClearML {what} {model_id} not found on {self.host}")
            if code in (401, 403):
                return refused
            if code >= 500:
                return TemporaryError(f"ClearML server {self.host} is failing: {code} {message}")
            return StageFailed(f"ClearML server {self.host} failed on model {model_id}: {code}/{subcode} {message}")
        cause = exc.__cause__ or exc.__context__
        for err in (exc, cause):
            if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                                requests.exceptions.RetryError)):
                return unreachable
        if type(exc).__name__ == "LoginError":  # "Failed getting token (error <status> from <host>): ..."
            match = re.search(r"\(error (\d{3}) from ", text)
            status = int(match.group(1)) if match else 0
            if status in (401, 403):
                return refused
            if status >= 500:
                return unreachable
        return StageFailed(f"ClearML server {self.host} failed on model {model_id}: {text}")

    def fetch_metadata(self, ref: ModelRef) -> ModelMetadata:
        model = self._model(ref.name)

        def read() -> tuple[dict[str, Any], Any, dict[str, float]]:
            raw_meta = {k: _value(v) for k, v in (model.get_all_metadata() or {}).items() if isinstance(v, dict)}
            task = self._task(model)
            metrics = _task_metrics(task) if task is not None else {}
            for name in ("schema", "examples", "reference", "modules"):  # the task's JSON artifacts, where metadata has none
                if name not in raw_meta and task is not None:
                    found = self._task_json(task, name)
                    if found is not None:
                        raw_meta[name] = found
            return raw_meta, task, metrics

        raw_meta, task, metrics = self._sdk_call(f"reading model {ref.name} and its task", ref.name, read)
        for key, value in sorted(raw_meta.items()):  # `metrics.NAME` entries: what the task does not report
            if not key.startswith("metrics.") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name = key[len("metrics."):]
            if name in metrics and not math.isclose(metrics[name], float(value), rel_tol=1e-9, abs_tol=1e-12):
                raise StageFailed(f"ClearML model {ref.name}: metric {name} is {metrics[name]:g} on its task but "
                                  f"{float(value):g} in the model's metadata ({key}): they disagree",
                                  hint=f"remove or correct the model's {key} metadata; the task's value counts")
            metrics.setdefault(name, float(value))
        uri = model.url or ""
        if not uri.strip():
            raise StageFailed(f"ClearML model {ref.name} on {self.host} has no file (its URI is empty)",
                              hint="upload the weights with OutputModel.update_weights()")
        labels = raw_meta.get("labels")
        if labels is None and getattr(model, "labels", None):
            labels = [name for name, _ in sorted(model.labels.items(), key=lambda kv: kv[1])]
        framework = str(raw_meta.get("framework") or model.framework or "").lower()
        fields = {
            "name": model.name, "version": str(raw_meta.get("version") or ref.name),
            "framework": FRAMEWORKS.get(framework, framework or "sklearn"),
            "task": raw_meta.get("task", "classification"), "sha256": raw_meta.get("sha256"),
            "artifact_name": Path(urlparse(uri).path).name or "model", "metrics": metrics,
            "tags": list(model.tags or []), "schema": raw_meta.get("schema"), "labels": labels,
            "class_name": raw_meta.get("class_name"), "examples": raw_meta.get("examples") or [],
            "reference": raw_meta.get("reference"), "modules": raw_meta.get("modules"), "created_at": str(getattr(model._get_model_data(), "created", "") or ""),
        }
        if not fields["sha256"]:
            raise StageFailed(f"ClearML model {ref.name} has no sha256 in its metadata: its file cannot be verified",
                              hint="set_metadata('sha256', <hex digest of the file>) on the model")
        try:
            meta = ModelMetadata.model_validate(fields)
        except ValidationError as exc:
            raise StageFailed(f"metadata of ClearML model {ref.name} is invalid: {invalid_metadata(exc)}") from None
        meta._ref = ref.name
        meta._extras.update(uri=uri, task=getattr(task, "id", None))
        return meta

    def _task(self, model: Any) -> Any:
        task_id = model.task
        if not task_id:
            return None
        try:
            return self._sdk.Task.get_task(task_id=task_id)
        except ValueError:  # the task was deleted: the model's own metadata still counts
            return None

    def _task_json(self, task: Any, name: str) -> Any:
        artifact = (task.artifacts or {}).get(name)
        if artifact is None:
            return None
        local = artifact.get_local_copy(extract_archive=False, raise_on_error=False)
        if not local:
            raise StageFailed(f"artifact {name!r} of ClearML task {task.id} could not be downloaded")
        try:
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StageFailed(f"artifact {name!r} of ClearML task {task.id} is not JSON: {exc}") from None

    def fetch_artifact(self, meta: ModelMetadata, dest_dir: Path) -> Path:
        if not meta._ref:
            raise StageFailed(f"model {meta.name}@{meta.version} was not fetched from ClearML")
        model = self._model(meta._ref)
        try:
            local = model.get_local_copy(extract_archive=False, raise_on_error=True, force_download=True)
        except ValueError:
            local = None
        except Exception as exc:
            raise self._failure(exc, meta._ref) from None
        finally:
            quiet_sdk()
        if not local or not Path(local).is_file():
            raise StageFailed(f"the file of ClearML model {meta._ref} could not be downloaded from {model.url}",
                              hint="check that it exists and the storage credentials (s3.* settings for S3/MinIO)")
        dest = Path(dest_dir) / meta.artifact_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return dest

    def fetch_module(self, meta: ModelMetadata, file: ModuleFile, dest: Path) -> Path:
        """A URI (s3://, https://, file://) in the metadata, or an artifact of the model's task by that name."""
        sdk = self._connect()
        where = f"module file {file.file!r} of ClearML model {meta._ref}"
        if "://" in file.file:
            local = self._sdk_call(f"downloading {file.file}", str(meta._ref),
                                   lambda: sdk.StorageManager.get_local_copy(remote_url=file.file, extract_archive=False))
        else:
            task_id = meta._extras.get("task")
            if not task_id:
                raise StageFailed(f"{where}: the model has no task to hold it as an artifact")
            task = self._sdk_call(f"reading task {task_id}", str(meta._ref), sdk.Task.get_task, task_id=task_id)
            artifact = (task.artifacts or {}).get(file.file)
            if artifact is None:
                known = ", ".join(sorted(task.artifacts or {})) or "none"
                raise StageFailed(f"{where}: task {task_id} has no such artifact (artifacts: {known})")
            local = self._sdk_call(f"downloading artifact {file.file}", str(meta._ref),
                                   lambda: artifact.get_local_copy(extract_archive=False, raise_on_error=False))
        if not local or not Path(local).is_file():
            raise StageFailed(f"{where} could not be downloaded",
                              hint="check that it exists and the storage credentials (s3.* settings for S3/MinIO)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return dest

    def write_back(self, ref: ModelRef, *, add_tags: list[str], remove_tags: list[str],
                   metadata: dict[str, str]) -> bool:
        if not self.settings.clearml.write_back:
            return False
        model = self._model(ref.name)

        def write() -> None:
            tags = [t for t in (model.tags or []) if t not in remove_tags and t not in add_tags] + add_tags
            if tags != list(model.tags or []):
                # models.edit with the tags alone (the `tags` setter would keep the old ones for an empty list)
                model._get_base_model().edit(tags=tags)
            if metadata:
                entries = {k: {"value": v, "type": "str"} for k, v in metadata.items()}
                if not model.set_all_metadata(entries, replace=False):  # models.add_or_update_metadata
                    raise StageFailed(f"ClearML server {self.host} did not store the metadata of model {ref.name}")

        self._sdk_call(f"writing tags and metadata of model {ref.name}", ref.name, write)
        return True

    def tagged(self, tag: str) -> list[ModelRef]:
        """Every model carrying the tag, archived ones too: models.get_all with tags=[tag] (Model.query_models)."""
        sdk = self._connect()
        found = self._sdk_call(f"looking up models tagged {tag!r}", f"tagged {tag}",
                               sdk.Model.query_models, tags=[tag], include_archived=True)
        return [ModelRef("clearml", m.id) for m in found or []]
