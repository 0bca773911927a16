"""The local model store, the embedded default: artifacts content-addressed by sha256.

<store>/blobs/sha256/<hex>                   the artifact bytes
<store>/models/<name>/<version>.json         its metadata
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import NotFoundError, StageFailed, TemporaryError, UsageError
from ..state import now
from . import _LOCAL_RE, ModelRef, sha256_file
from .metadata import ModelMetadata, ModuleFile, invalid_metadata

FRAMEWORKS_BY_SUFFIX = {".joblib": "sklearn", ".pkl": "sklearn", ".pickle": "sklearn", ".py": "python", ".onnx": "onnx"}


LOCK_TIMEOUT_S = 60.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """`path` holds `data` or what it held before, never a part; durable (file and directory fsynced) on return."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(path: Path, what: str, timeout_s: float = LOCK_TIMEOUT_S):
    """An exclusive fcntl.flock on `path` (created if needed), waited for at most `timeout_s`.

    The kernel drops the lock when its holder exits, however it ends (kill -9 included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    raise TemporaryError(
                        f"{what} is locked by another process (pid {holder}, {path}) for more than {timeout_s:g}s",
                        hint="another `mlops model register` of the same name is still running",
                    ) from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # names the holder to whoever waits
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    def _model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def versions(self, name: str) -> list[str]:
        folder = self._model_dir(name)
        found = [p.stem for p in folder.glob("*.json")] if folder.is_dir() else []
        return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))

    def names(self) -> list[str]:
        folder = self.root / "models"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def register(
        self,
        artifact: Path,
        *,
        name: str,
        framework: str | None = None,
        task: str = "classification",
        metrics: dict[str, float] | None = None,
        tags: list[str] | None = None,
        schema: dict[str, Any] | None = None,
        examples: list[dict[str, Any]] | None = None,
        reference: dict[str, Any] | None = None,
        labels: list[Any] | None = None,
        class_name: str | None = None,
        modules: dict[str, Any] | None = None,
    ) -> ModelMetadata:
        """Store the artifact by content and its metadata as the next version of `name`.

        `modules` has the shape of ModelMetadata.modules, with `file` a local path and no sha256: each file is
        stored by content like the artifact, and its digest and base name recorded."""
        artifact = Path(artifact)
        if not _LOCAL_RE.match(name) or "@" in name:
            raise UsageError(f"model name {name!r} is not valid", hint="use letters, digits, '.', '_' and '-'")
        if not artifact.is_file():
            raise NotFoundError(f"model file {artifact} not found")
        framework = framework or FRAMEWORKS_BY_SUFFIX.get(artifact.suffix)
        if framework is None:
            raise UsageError(f"cannot tell the framework of {artifact.name}", hint="pass --framework sklearn|python")
        if framework == "python" and (artifact.suffix != ".py" or not class_name):
            raise UsageError(
                "a python model is a .py file with a model class", hint="pass the .py file and --class-name NAME"
            )
        sha = sha256_file(artifact)
        modules, module_files = self._module_files(modules)

        def metadata(version: str) -> ModelMetadata:
            try:
                return ModelMetadata(
                    name=name,
                    version=version,
                    framework=framework,
                    task=task,
                    sha256=sha,
                    artifact_name=artifact.name,
                    size=artifact.stat().st_size,
                    created_at=now(),
                    metrics=metrics or {},
                    tags=tags or [],
                    schema=schema,
                    labels=labels,
                    class_name=class_name,
                    examples=examples or [],
                    reference=reference,
                    modules=modules,
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                raise UsageError(f"invalid model metadata: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None

        metadata("1")  # invalid metadata fails before anything is stored or locked
        try:
            for path, digest in [(artifact, sha)] + module_files:
                self._store_blob(path, digest)  # by content and atomic: safe without the lock
            # Allocating the next version and writing its metadata is one step under the model's lock, so parallel
            # registers of one name each get their own version (none overwrites another).
            with _locked(self._model_dir(name) / ".lock", f"model {name}"):
                for stale in self._model_dir(name).glob(".tmp-*"):  # a register killed while it held the lock
                    stale.unlink(missing_ok=True)
                numeric = [int(v) for v in self.versions(name) if v.isdigit()]
                meta = metadata(str(max(numeric, default=0) + 1))
                text = json.dumps(meta.model_dump(mode="json", by_alias=True), indent=2)
                _write_atomic(self._model_dir(name) / f"{meta.version}.json", text.encode())
        except OSError as exc:  # a full disk, a read-only store: one line, nothing registered
            where = exc.filename or self.root
            raise StageFailed(f"cannot write the local store: {where}: {exc.strerror or type(exc).__name__}") from None
        return meta

    def _store_blob(self, path: Path, digest: str) -> None:
        """Stored by content and durable before the metadata naming it is written; a blob of the wrong size (cut
        short by a power cut before blobs were fsynced) is written again."""
        blob = self.blob(digest)
        if not blob.is_file() or blob.stat().st_size != path.stat().st_size:
            blob.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=blob.parent)
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, blob)
            _fsync_dir(blob.parent)

    @staticmethod
    def _module_files(modules: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[tuple[Path, str]]]:
        """The modules description with each local file replaced by its name and digest, and the files to store."""
        if not modules:
            return None, []
        out = json.loads(json.dumps(modules))
        files: list[tuple[Path, str]] = []

        def stored(entry: Any, where: str) -> Any:
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), (str, Path)):
                raise UsageError(f"modules.{where} needs a `file`")
            path = Path(entry["file"])
            if not path.is_file():
                raise NotFoundError(f"modules.{where}: file {path} not found")
            digest = sha256_file(path)
            files.append((path, digest))
            return {**entry, "file": path.name, "sha256": digest}

        if out.get("outlier_detector") is not None:
            out["outlier_detector"] = stored(out["outlier_detector"], "outlier_detector")
        out["user_modules"] = [stored(m, f"user_modules.{i}") for i, m in enumerate(out.get("user_modules") or [])]
        return out, files

    def metadata(self, ref: ModelRef) -> ModelMetadata:
        versions = self.versions(ref.name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(
                f"model {ref} not found in the local store {self.root} (models: {known})",
                hint="register it with `mlops model register FILE --name NAME`",
            )
        version = ref.version or versions[-1]
        path = self._model_dir(ref.name) / f"{version}.json"
        if not path.is_file():
            raise NotFoundError(f"model {ref} not found (versions of {ref.name}: {', '.join(versions)})")
        try:
            return ModelMetadata.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise StageFailed(f"metadata of model {ref} is invalid: {invalid_metadata(exc)}") from None


class LocalSource:
    """The ModelSource over a LocalStore."""

    def __init__(self, settings):
        self.store = LocalStore(settings.store_path)

    def fetch_metadata(self, ref: ModelRef) -> ModelMetadata:
        return self.store.metadata(ref)

    def fetch_artifact(self, meta: ModelMetadata, dest_dir: Path) -> Path:
        blob = self.store.blob(meta.sha256)
        if not blob.is_file():
            raise StageFailed(f"artifact of model {meta.name}@{meta.version} is missing from the store ({blob})")
        dest = Path(dest_dir) / meta.artifact_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob, dest)
        return dest

    def fetch_module(self, meta: ModelMetadata, file: ModuleFile, dest: Path) -> Path:
        blob = self.store.blob(file.sha256)  # stored by content: a missing or altered one fails its digest check
        if not blob.is_file():
            raise StageFailed(f"module file {file.file} of model {meta.name}@{meta.version} is missing from the store")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob, dest)
        return dest

    def write_back(
        self, ref: ModelRef, *, add_tags: list[str], remove_tags: list[str], metadata: dict[str, str]
    ) -> bool:
        """The local store keeps a version's metadata as registered: the state file is its record."""
        return False

    def tagged(self, tag: str) -> list[ModelRef]:
        return []  # no tags are written here
