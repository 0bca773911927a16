"""Model sources: where models and their metadata come from, chosen by the reference's scheme."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from serving.modules.settings import PreprocessingSettings
from serving.spec import Framework, SchemaSpec, Task

from ..digests import sha256_file  # noqa: F401 (re-exported for the sources)
from ..errors import UsageError
from ..registry import load

if TYPE_CHECKING:
    from ..config import Settings

SOURCES = {
    "local": "mlops_cli.sources.local:LocalSource",
    "clearml": "mlops_cli.sources.clearml:ClearMLSource",
    "s3": "mlops_cli.sources.s3:S3Source",
}


def missing_client(package: str, extra: str) -> Exception:
    """The one-line error for an optional client library that is not installed (mlops_cli.extras)."""
    from ..extras import missing_extra

    what = {"s3": "S3 access", "clearml": "the ClearML source"}.get(extra, f"the {extra} source")
    return missing_extra(f"{what} uses {package}", package, extra)


_FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")  # relative, no '..'
_SHA256 = r"^[0-9a-f]{64}$"


def _plain_file(value: str) -> str:
    if not _FILE_RE.match(value) or ".." in value.split("/"):
        raise ValueError(f"{value!r} is not a plain relative file name (letters, digits, '.', '_', '-', '/')")
    return value


class ModuleFile(BaseModel):
    """A file the source keeps beside the model (local store: by digest; S3: under the prefix; ClearML: a task
    artifact of that name or a URI), checked against sha256 in validate-model and again in assemble-server."""

    model_config = ConfigDict(extra="forbid")
    file: str = Field(min_length=1)
    sha256: str = Field(pattern=_SHA256)

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        return value if "://" in value else _plain_file(value)


class UserModule(ModuleFile):
    """Custom Python code run in the chain (before the model): `class` is the dotted path the bundle uses,
    `pkg.file.ClassName` -> the file goes to BUNDLE/pkg/file.py."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    class_: str = Field(alias="class", pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("class_")
    @classmethod
    def _not_the_bundles_own(cls, value: str) -> str:
        if value.split(".")[0] in ("serving", "model", "modules"):
            raise ValueError(f"user module {value!r}: its top package would clash with the bundle's own "
                             "(serving, model, modules)")
        return value

    @property
    def bundle_file(self) -> str:
        return "/".join(self.class_.split(".")[:-1]) + ".py"


class ExtraModules(BaseModel):
    """What runs around the model besides the built-ins: preprocessing settings, an outlier detector (a joblib
    file whose predict() returns -1 for an outlier, e.g. a fitted IsolationForest), user modules."""

    model_config = ConfigDict(extra="forbid")
    preprocessing: Optional[PreprocessingSettings] = None
    outlier_detector: Optional[ModuleFile] = None
    user_modules: list[UserModule] = Field(default_factory=list)

    def files(self) -> list[ModuleFile]:
        return ([self.outlier_detector] if self.outlier_detector else []) + list(self.user_modules)


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")      # as a local model name (_LOCAL_RE)
VERSION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")    # an image tag's characters


def invalid_metadata(exc: ValidationError) -> str:
    """The first problem of invalid metadata in one line: `where: what`."""
    err = exc.errors()[0]
    where = ".".join(map(str, err["loc"])) or "(top level)"
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


class ModelMetadata(BaseModel):
    """What a source knows about one model version: the same fields for every source."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, protected_namespaces=())
    name: str
    version: str
    framework: Framework = "sklearn"
    task: Task = "classification"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    artifact_name: str
    size: int = 0
    created_at: str = ""
    metrics: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(default_factory=dict)  # NaN/inf refused
    tags: list[str] = Field(default_factory=list)
    schema_: Optional[SchemaSpec] = Field(default=None, alias="schema")  # the server's own type (serving.spec)
    labels: Optional[list[Any]] = None
    class_name: Optional[str] = None
    examples: list[dict[str, Any]] = Field(default_factory=list)
    reference: Optional[dict[str, Any]] = None
    modules: Optional[ExtraModules] = None
    _ref: Optional[str] = PrivateAttr(default=None)  # where the source found it (not part of the digest)
    _extras: dict[str, Any] = PrivateAttr(default_factory=dict)  # source-specific details (ClearML: task, uri)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # the name becomes a directory name (bundles/NAME-VERSION-...) and an image repository: whatever the source
        if not NAME_RE.match(value):
            raise ValueError(f"model name {value!r} cannot name a bundle or an image: use letters, digits, "
                             "'.', '_' and '-', starting with a letter or digit")
        return value

    @field_validator("version")
    @classmethod
    def _plain_version(cls, value: str) -> str:
        if not VERSION_RE.match(value):
            raise ValueError(f"model version {value!r} cannot name a bundle or an image tag: use letters, digits, "
                             "'.', '_' and '-', starting with a letter, digit or '_'")
        return value


@dataclass(frozen=True)
class ModelRef:
    """`local:NAME[@VERSION]`, `clearml:MODEL_ID` (name is the ID) or `s3://BUCKET/PREFIX` (name is BUCKET/PREFIX)."""

    scheme: str
    name: str
    version: Optional[str] = None

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.name}"
        return f"{self.scheme}:{self.name}" + (f"@{self.version}" if self.version else "")

    def pinned(self, version: str) -> "ModelRef":
        """The reference naming this exact version: local names a version; ClearML IDs and S3 prefixes already do."""
        if self.scheme != "local" or self.version:
            return self
        return ModelRef(self.scheme, self.name, version)


_LOCAL_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(@(?P<version>[A-Za-z0-9._-]+))?$")
_CLEARML_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FORMS = "local:NAME[@VERSION], clearml:MODEL_ID or s3://BUCKET/PREFIX"


def _parse_s3(text: str) -> ModelRef:
    bucket, _, prefix = text[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise UsageError(f"malformed model reference {text!r}: {bucket!r} is not an S3 bucket name",
                         hint="expected s3://BUCKET/PREFIX")
    if not prefix or any(part in ("", ".", "..") for part in prefix.split("/")) or any(c in prefix for c in "\\\n\r\0"):
        raise UsageError(f"malformed model reference {text!r}: needs a key prefix under the bucket",
                         hint="expected s3://BUCKET/PREFIX, the prefix holding metadata.json and the artifact")
    return ModelRef("s3", f"{bucket}/{prefix}")


def parse_ref(text: str) -> ModelRef:
    """`local:NAME[@VERSION]`, `clearml:MODEL_ID`, `s3://BUCKET/PREFIX`; an unknown scheme lists the known ones."""
    text = text.strip()
    if text.startswith("s3://"):
        return _parse_s3(text)
    scheme, sep, rest = text.partition(":")
    if not sep:
        raise UsageError(f"model reference {text!r} has no scheme", hint=f"write local:{text}; forms: {_FORMS}")
    if scheme not in SOURCES:
        raise UsageError(f"unknown model source {scheme!r} in {text!r}; known: {', '.join(sorted(SOURCES))}")
    if scheme == "s3":
        raise UsageError(f"malformed model reference {text!r}", hint="expected s3://BUCKET/PREFIX")
    if scheme == "clearml":
        if not _CLEARML_RE.match(rest):
            raise UsageError(f"malformed model reference {text!r}", hint="expected clearml:MODEL_ID (the model's ID, no version)")
        return ModelRef("clearml", rest)
    match = _LOCAL_RE.match(rest)
    if not match:
        raise UsageError(f"malformed model reference {text!r}", hint="expected local:NAME[@VERSION]")
    return ModelRef(scheme, match["name"], match["version"])


class ModelSource(Protocol):
    def fetch_metadata(self, ref: ModelRef) -> ModelMetadata:
        """The model's metadata; NotFoundError naming what exists when it does not."""

    def fetch_artifact(self, meta: ModelMetadata, dest_dir: Path) -> Path:
        """Put the artifact in dest_dir and return its path (not yet checked against sha256)."""

    def write_back(self, ref: ModelRef, *, add_tags: list[str], remove_tags: list[str],
                   metadata: dict[str, str]) -> bool:
        """Record on the model itself (tags, metadata) what the pipeline did with it; False where the
        source keeps no such record (the state file still does). Never changes what validation digested."""

    def fetch_module(self, meta: ModelMetadata, file: ModuleFile, dest: Path) -> Path:
        """Put one of the model's module files (meta.modules) at dest (not yet checked against its sha256)."""

    def tagged(self, tag: str) -> list[ModelRef]:
        """Every model of the source carrying the tag (the audit takes deployed:* tags off all but one);
        empty where the source keeps no tags."""


def get_source(scheme: str, settings: "Settings") -> ModelSource:
    return load("model source", scheme, SOURCES)(settings)
