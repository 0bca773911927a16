"""The model metadata: what every source tells about one model version, the same fields whatever the source."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from serving.modules.settings import PreprocessingSettings
from serving.spec import Framework, SchemaSpec, Task

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
            raise ValueError(
                f"user module {value!r}: its top package would clash with the bundle's own (serving, model, modules)"
            )
        return value

    @property
    def bundle_file(self) -> str:
        return "/".join(self.class_.split(".")[:-1]) + ".py"


class ExtraModules(BaseModel):
    """What runs around the model besides the built-ins: preprocessing settings, an outlier detector (a joblib
    file whose predict() returns -1 for an outlier, e.g. a fitted IsolationForest), user modules."""

    model_config = ConfigDict(extra="forbid")
    preprocessing: PreprocessingSettings | None = None
    outlier_detector: ModuleFile | None = None
    user_modules: list[UserModule] = Field(default_factory=list)

    def files(self) -> list[ModuleFile]:
        return ([self.outlier_detector] if self.outlier_detector else []) + list(self.user_modules)


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # as a local model name (_LOCAL_RE)
VERSION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")  # an image tag's characters


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
    schema_: SchemaSpec | None = Field(default=None, alias="schema")  # the server's own type (serving.spec)
    labels: list[Any] | None = None
    class_name: str | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list)
    reference: dict[str, Any] | None = None
    modules: ExtraModules | None = None
    _ref: str | None = PrivateAttr(default=None)  # where the source found it (not part of the digest)
    _extras: dict[str, Any] = PrivateAttr(default_factory=dict)  # source-specific details (ClearML: task, uri)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # the name becomes a directory name (bundles/NAME-VERSION-...) and an image repository: whatever the source
        if not NAME_RE.match(value):
            raise ValueError(
                f"model name {value!r} cannot name a bundle or an image: use letters, digits, "
                "'.', '_' and '-', starting with a letter or digit"
            )
        return value

    @field_validator("version")
    @classmethod
    def _plain_version(cls, value: str) -> str:
        if not VERSION_RE.match(value):
            raise ValueError(
                f"model version {value!r} cannot name a bundle or an image tag: use letters, digits, "
                "'.', '_' and '-', starting with a letter, digit or '_'"
            )
        return value
