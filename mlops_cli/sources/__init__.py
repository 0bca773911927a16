"""Model sources: where models and their metadata come from, chosen by the reference's scheme."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..backends import load
from ..digests import sha256_file  # noqa: F401 (re-exported for the sources)
from ..errors import UsageError

if TYPE_CHECKING:
    from ..settings import Settings
    from .metadata import ModelMetadata, ModuleFile

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


@dataclass(frozen=True)
class ModelRef:
    """`local:NAME[@VERSION]`, `clearml:MODEL_ID` (name is the ID) or `s3://BUCKET/PREFIX` (name is BUCKET/PREFIX)."""

    scheme: str
    name: str
    version: str | None = None

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.name}"
        return f"{self.scheme}:{self.name}" + (f"@{self.version}" if self.version else "")

    def pinned(self, version: str) -> ModelRef:
        """The reference naming this exact version: local names a version; ClearML IDs and S3 prefixes already do."""
        if self.scheme != "local" or self.version:
            return self
        return ModelRef(self.scheme, self.name, version)


_LOCAL_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(@(?P<version>[A-Za-z0-9._-]+))?$")
_CLEARML_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FORMS = "local:NAME[@VERSION], clearml:MODEL_ID or s3://BUCKET/PREFIX"


def _parse_s3(text: str) -> ModelRef:
    bucket, _, prefix = text[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise UsageError(
            f"malformed model reference {text!r}: {bucket!r} is not an S3 bucket name",
            hint="expected s3://BUCKET/PREFIX",
        )
    if not prefix or any(part in ("", ".", "..") for part in prefix.split("/")) or any(c in prefix for c in "\\\n\r\0"):
        raise UsageError(
            f"malformed model reference {text!r}: needs a key prefix under the bucket",
            hint="expected s3://BUCKET/PREFIX, the prefix holding metadata.json and the artifact",
        )
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
            raise UsageError(
                f"malformed model reference {text!r}", hint="expected clearml:MODEL_ID (the model's ID, no version)"
            )
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

    def write_back(
        self, ref: ModelRef, *, add_tags: list[str], remove_tags: list[str], metadata: dict[str, str]
    ) -> bool:
        """Record on the model itself (tags, metadata) what the pipeline did with it; False where the
        source keeps no such record (the state file still does). Never changes what validation digested."""

    def fetch_module(self, meta: ModelMetadata, file: ModuleFile, dest: Path) -> Path:
        """Put one of the model's module files (meta.modules) at dest (not yet checked against its sha256)."""

    def tagged(self, tag: str) -> list[ModelRef]:
        """Every model of the source carrying the tag (the audit takes deployed:* tags off all but one);
        empty where the source keeps no tags."""


def get_source(scheme: str, settings: Settings) -> ModelSource:
    return load("model source", scheme, SOURCES)(settings)
