"""Model sources: where models and their metadata come from, chosen by the reference's scheme."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..digests import sha256_file  # noqa: F401 (re-exported for the sources)
from ..errors import UsageError
from ..registry import load

if TYPE_CHECKING:
    from ..config import Settings

SOURCES = {"local": "mlops_cli.sources.local:LocalSource"}

InputType = Literal["number", "integer", "string", "boolean"]


def _accepts(kind: str, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return kind == "number" or float(value).is_integer()


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    type: InputType = "number"
    required: bool = True
    default: Any = None

    @model_validator(mode="after")
    def _default_fits(self) -> "Feature":
        if not self.required and not _accepts(self.type, self.default):
            raise ValueError(f"optional input {self.name!r} needs a default of type {self.type}")
        return self


class OutputField(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    type: InputType = "number"


class ModelSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Feature] = Field(min_length=1)
    outputs: list[OutputField] = Field(min_length=1)


class ModelMetadata(BaseModel):
    """What a source knows about one model version: the same fields for every source."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, protected_namespaces=())
    name: str
    version: str
    framework: Literal["sklearn", "onnx", "python"] = "sklearn"
    task: Literal["classification", "regression"] = "classification"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    artifact_name: str
    size: int = 0
    created_at: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    schema_: Optional[ModelSchema] = Field(default=None, alias="schema")
    labels: Optional[list[Any]] = None
    class_name: Optional[str] = None
    examples: list[dict[str, Any]] = Field(default_factory=list)
    reference: Optional[dict[str, Any]] = None


@dataclass(frozen=True)
class ModelRef:
    scheme: str
    name: str
    version: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.scheme}:{self.name}" + (f"@{self.version}" if self.version else "")


_LOCAL_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(@(?P<version>[A-Za-z0-9._-]+))?$")


def parse_ref(text: str) -> ModelRef:
    """`local:NAME[@VERSION]`; an unknown scheme lists the known ones."""
    scheme, sep, rest = text.partition(":")
    if not sep:
        raise UsageError(f"model reference {text!r} has no scheme", hint=f"write local:{text}")
    if scheme not in SOURCES:
        raise UsageError(f"unknown model source {scheme!r} in {text!r}; known: {', '.join(sorted(SOURCES))}")
    match = _LOCAL_RE.match(rest)
    if not match:
        raise UsageError(f"malformed model reference {text!r}", hint="expected local:NAME[@VERSION]")
    return ModelRef(scheme, match["name"], match["version"])


class ModelSource(Protocol):
    def fetch_metadata(self, ref: ModelRef) -> ModelMetadata:
        """The model's metadata; NotFoundError naming what exists when it does not."""

    def fetch_artifact(self, meta: ModelMetadata, dest_dir: Path) -> Path:
        """Put the artifact in dest_dir and return its path (not yet checked against sha256)."""


def get_source(scheme: str, settings: "Settings") -> ModelSource:
    return load("model source", scheme, SOURCES)(settings)
