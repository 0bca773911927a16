"""spec.json: what a bundle runs, parsed and validated into frozen models (docs/bundle.md).

Unknown keys and bad values are refused with one line naming the place, e.g.
``spec.json: model.sha256: must be 64 lowercase hex characters``. Module settings are checked
by the modules themselves when the chain is built (:mod:`serving.modules`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serving.errors import BundleError

SPEC_FILE = "spec.json"
SPEC_VERSION: Final = 1
InputType = Literal["number", "integer", "string", "boolean"]
Framework = Literal["sklearn", "onnx", "python"]
Task = Literal["classification", "regression"]
NUMERIC_TYPES = frozenset({"number", "integer", "boolean"})


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def type_accepts(kind: str, value: Any) -> bool:
    """Whether ``value`` (as json.loads returns it) is a valid ``kind`` value."""
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return kind == "number" or float(value).is_integer()


class ModelSpec(_Frozen):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    framework: Framework
    task: Task
    artifact: str = Field(min_length=1)
    sha256: str
    class_name: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if len(value) != 64 or value.strip("0123456789abcdef"):
            raise ValueError("must be 64 lowercase hex characters")
        return value

    @field_validator("artifact")
    @classmethod
    def _inside_bundle(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\\" in value:
            raise ValueError("must be a relative path inside the bundle")
        return value

    @model_validator(mode="after")
    def _class_name_for_python(self) -> ModelSpec:
        if self.framework == "python" and not (self.class_name or "").isidentifier():
            raise ValueError("framework 'python' needs class_name, a class defined in the artifact")
        return self


class InputSpec(_Frozen):
    name: str = Field(min_length=1)
    type: InputType = "number"
    required: bool = True
    default: Any = None

    @model_validator(mode="after")
    def _default_matches_type(self) -> InputSpec:
        if not self.required and not type_accepts(self.type, self.default):
            raise ValueError(f"optional input {self.name!r} needs a default of type {self.type}")
        return self


class OutputSpec(_Frozen):
    name: str = Field(min_length=1)
    type: InputType = "number"


class SchemaSpec(_Frozen):
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> SchemaSpec:
        for kind, fields in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [f.name for f in fields]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} name(s): {', '.join(dupes)}")
        return self

    @property
    def numeric(self) -> bool:
        """All inputs are number/integer/boolean, so the model gets a float64 array."""
        return all(f.type in NUMERIC_TYPES for f in self.inputs)


class ModuleSpec(_Frozen):
    name: str = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)


class ServerSpec(_Frozen):
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    drain_seconds: float = Field(default=1.0, ge=0, le=3600)
    max_batch_requests: int = Field(default=128, ge=1, le=65536)
    max_batch_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    max_queue: int = Field(default=512, ge=1, le=1_000_000)
    # self-protection (docs/bundle.md, "Limits"): memory ~ baseline + max_inflight_bytes x multiplier
    max_rows: int = Field(default=10_000, ge=1, le=10_000_000)
    max_inflight_bytes: int = Field(default=8_388_608, gt=0)
    max_batch_bytes: int = Field(default=1_048_576, gt=0)
    offload_bytes: int = Field(default=65_536, ge=0)
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    max_headers: int = Field(default=100, ge=8, le=10_000)
    idle_timeout_seconds: float = Field(default=5.0, gt=0, le=3600)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _budget_holds_one_body(cls, data: Any) -> Any:
        """Without an explicit max_inflight_bytes, a max_body_bytes above its default raises it."""
        if isinstance(data, dict) and "max_inflight_bytes" not in data:
            body = data.get("max_body_bytes")
            if isinstance(body, int) and not isinstance(body, bool) and body > 8_388_608:
                data = {**data, "max_inflight_bytes": body}
        return data

    @model_validator(mode="after")
    def _body_fits_budget(self) -> ServerSpec:
        if self.max_inflight_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least max_body_bytes "
                f"({self.max_body_bytes}), else a body of the largest size is never admitted"
            )
        return self


class Spec(_Frozen):
    spec_version: Literal[1]
    model: ModelSpec
    io: SchemaSpec = Field(alias="schema")
    modules: list[ModuleSpec] = Field(min_length=1)
    server: ServerSpec = Field(default_factory=ServerSpec)

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    def to_json(self) -> str:
        """The spec as ``spec.json`` holds it (every key written, defaults included)."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"

    def module(self, name: str) -> ModuleSpec | None:
        """The chain's entry named ``name``, if it has one."""
        return next((m for m in self.modules if m.name == name), None)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _one_line(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "missing required key"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {msg}")
    return f"{source}: " + "; ".join(problems)


def parse_schema(data: Any, source: str = "schema") -> SchemaSpec:
    """Validate an interface (``{"inputs": [...], "outputs": [...]}``); BundleError with one line."""
    try:
        return SchemaSpec.model_validate(data, strict=False)
    except ValidationError as exc:
        raise BundleError(_one_line(exc, source)) from None


def answer_problems(outputs: list[OutputSpec], body: Any, count: int) -> list[str]:
    """Why a predict response body (as a client decodes it) does not answer ``count`` instances with
    ``outputs``; empty when it does. Extra keys (e.g. an outlier annotation) are allowed."""
    if not isinstance(body, dict) or not isinstance(body.get("predictions"), list):
        return ["response has no 'predictions' list"]
    predictions = body["predictions"]
    if len(predictions) != count:
        return [f"{len(predictions)} predictions for {count} instances"]
    problems = []
    for i, prediction in enumerate(predictions):
        if not isinstance(prediction, dict):
            problems.append(f"prediction {i} is not an object")
            continue
        for field in outputs:
            value = prediction.get(field.name)
            if field.name not in prediction or not type_accepts(field.type, value):
                problems.append(f"prediction {i}: {field.name!r} should be {field.type}, got {value!r}")
    return problems[:5]


def write_spec(spec: Spec, bundle_dir: str | Path) -> Path:
    """Write ``BUNDLE/spec.json``; what :func:`load_spec` reads back is ``spec`` again."""
    path = Path(bundle_dir) / SPEC_FILE
    path.write_text(spec.to_json(), encoding="utf-8")
    return path


def parse_spec(data: Any, source: str = SPEC_FILE) -> Spec:
    """Validate an already-decoded spec; raises :class:`BundleError` with one line."""
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise BundleError(_one_line(exc, source)) from None


def load_spec(bundle_dir: str | Path) -> Spec:
    """Read and validate ``BUNDLE/spec.json``."""
    path = Path(bundle_dir) / SPEC_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"no {SPEC_FILE} in bundle {bundle_dir}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise BundleError(f"{SPEC_FILE}: not valid JSON: {exc}") from None
    return parse_spec(data)
