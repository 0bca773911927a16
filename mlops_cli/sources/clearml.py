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

Connection to the server and the SDK's configuration, logging and timeouts: clearml_sdk.py.
"""

from __future__ import annotations

import ast
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError

from ..errors import ConfigError, MlopsError, NotFoundError, StageFailed, TemporaryError
from . import ModelRef
from .clearml_sdk import Deadline, connect, quiet_sdk, within
from .metadata import ModelMetadata, ModuleFile, invalid_metadata

FRAMEWORKS = {
    "scikitlearn": "sklearn",
    "scikit-learn": "sklearn",
    "sklearn": "sklearn",
    "joblib": "sklearn",
    "python": "python",
    "custom": "python",
    "onnx": "onnx",
}
JSON_FIELDS = ("schema", "examples", "reference", "labels", "modules")
# result_subcode of a 400 for an unknown ID (clearml-server apiserver/apierrors/errors.conf, bad_request)
NOT_FOUND_SUBCODES = {"task": 101, "model": 201}


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
            self.host, self._sdk = connect(self.settings)
        quiet_sdk()
        return self._sdk

    def _sdk_call(self, what: str, model_id: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One SDK operation within clearml.timeout_s; its failures as one-line errors."""
        timeout = self.settings.clearml.timeout_s
        try:
            return within(timeout, fn, *args, **kwargs)
        except MlopsError:
            raise
        except Deadline:
            raise TemporaryError(
                f"ClearML server {self.host} did not answer within {timeout:g} s ({what})",
                hint="check the server; clearml.timeout_s bounds each call",
            ) from None
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
        unreachable = TemporaryError(
            f"ClearML server {self.host} is unreachable or failing: {text}",
            hint=f"gave up after {self.settings.clearml.retries} retries (clearml.retries)",
        )
        refused = ConfigError(
            f"ClearML server {self.host} refused the credentials",
            hint="check clearml.access_key / CLEARML_API_ACCESS_KEY and the secret key",
        )
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
            if isinstance(
                err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)
            ):
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
            for name in (
                "schema",
                "examples",
                "reference",
                "modules",
            ):  # the task's JSON artifacts, where metadata has none
                if name not in raw_meta and task is not None:
                    found = self._task_json(task, name)
                    if found is not None:
                        raw_meta[name] = found
            return raw_meta, task, metrics

        raw_meta, task, metrics = self._sdk_call(f"reading model {ref.name} and its task", ref.name, read)
        for key, value in sorted(raw_meta.items()):  # `metrics.NAME` entries: what the task does not report
            if not key.startswith("metrics.") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name = key[len("metrics.") :]
            if name in metrics and not math.isclose(metrics[name], float(value), rel_tol=1e-9, abs_tol=1e-12):
                raise StageFailed(
                    f"ClearML model {ref.name}: metric {name} is {metrics[name]:g} on its task but "
                    f"{float(value):g} in the model's metadata ({key}): they disagree",
                    hint=f"remove or correct the model's {key} metadata; the task's value counts",
                )
            metrics.setdefault(name, float(value))
        uri = model.url or ""
        if not uri.strip():
            raise StageFailed(
                f"ClearML model {ref.name} on {self.host} has no file (its URI is empty)",
                hint="upload the weights with OutputModel.update_weights()",
            )
        labels = raw_meta.get("labels")
        if labels is None and getattr(model, "labels", None):
            labels = [name for name, _ in sorted(model.labels.items(), key=lambda kv: kv[1])]
        framework = str(raw_meta.get("framework") or model.framework or "").lower()
        fields = {
            "name": model.name,
            "version": str(raw_meta.get("version") or ref.name),
            "framework": FRAMEWORKS.get(framework, framework or "sklearn"),
            "task": raw_meta.get("task", "classification"),
            "sha256": raw_meta.get("sha256"),
            "artifact_name": Path(urlparse(uri).path).name or "model",
            "metrics": metrics,
            "tags": list(model.tags or []),
            "schema": raw_meta.get("schema"),
            "labels": labels,
            "class_name": raw_meta.get("class_name"),
            "examples": raw_meta.get("examples") or [],
            "reference": raw_meta.get("reference"),
            "modules": raw_meta.get("modules"),
            "created_at": str(getattr(model._get_model_data(), "created", "") or ""),
        }
        if not fields["sha256"]:
            raise StageFailed(
                f"ClearML model {ref.name} has no sha256 in its metadata: its file cannot be verified",
                hint="set_metadata('sha256', <hex digest of the file>) on the model",
            )
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
            raise StageFailed(
                f"the file of ClearML model {meta._ref} could not be downloaded from {model.url}",
                hint="check that it exists and the storage credentials (s3.* settings for S3/MinIO)",
            )
        dest = Path(dest_dir) / meta.artifact_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return dest

    def fetch_module(self, meta: ModelMetadata, file: ModuleFile, dest: Path) -> Path:
        """A URI (s3://, https://, file://) in the metadata, or an artifact of the model's task by that name."""
        sdk = self._connect()
        where = f"module file {file.file!r} of ClearML model {meta._ref}"
        if "://" in file.file:
            local = self._sdk_call(
                f"downloading {file.file}",
                str(meta._ref),
                lambda: sdk.StorageManager.get_local_copy(remote_url=file.file, extract_archive=False),
            )
        else:
            task_id = meta._extras.get("task")
            if not task_id:
                raise StageFailed(f"{where}: the model has no task to hold it as an artifact")
            task = self._sdk_call(f"reading task {task_id}", str(meta._ref), sdk.Task.get_task, task_id=task_id)
            artifact = (task.artifacts or {}).get(file.file)
            if artifact is None:
                known = ", ".join(sorted(task.artifacts or {})) or "none"
                raise StageFailed(f"{where}: task {task_id} has no such artifact (artifacts: {known})")
            local = self._sdk_call(
                f"downloading artifact {file.file}",
                str(meta._ref),
                lambda: artifact.get_local_copy(extract_archive=False, raise_on_error=False),
            )
        if not local or not Path(local).is_file():
            raise StageFailed(
                f"{where} could not be downloaded",
                hint="check that it exists and the storage credentials (s3.* settings for S3/MinIO)",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return dest

    def write_back(
        self, ref: ModelRef, *, add_tags: list[str], remove_tags: list[str], metadata: dict[str, str]
    ) -> bool:
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
        found = self._sdk_call(
            f"looking up models tagged {tag!r}",
            f"tagged {tag}",
            sdk.Model.query_models,
            tags=[tag],
            include_archived=True,
        )
        return [ModelRef("clearml", m.id) for m in found or []]
