"""The OpenAPI paths and schemas of the Open Inference Protocol (v2) and KServe v1 routes, from the
spec: one request tensor schema per input (its name, the datatypes that fit it), the 2-D form,
the outputs by name. :func:`serving.openapi.openapi_document` adds them to its document."""

from __future__ import annotations

from typing import Any

from serving.oip import DATATYPES, FITS, V2Codec
from serving.spec import Spec

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProtocolError"}}},
}
_OBJECT = {"type": "object", "additionalProperties": True}


def _json(ref: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _params(served: dict[str, str], *names: str) -> list[dict[str, Any]]:
    """Path parameters: the served model's name and version are the only values that answer 200."""
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "enum": [served[n]]}} for n in names
    ]


def _get(
    summary: str, ref: str, *params: str, errors: tuple[str, ...] = ("404",), served: dict[str, str]
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": _params(served, *params),
            "responses": {"200": _json(ref), **{e: _ERROR for e in errors}},
        }
    }


def _post(summary: str, request: str, response: str, *params: str, served: dict[str, str]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": _params(served, *params),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}},
            },
            "responses": {"200": _json(response), **{e: _ERROR for e in ("400", "404", "413", "503")}},
        }
    }


def _tensor(name: Any, datatypes: Any, shape: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["name", "shape", "datatype", "data"],
        "additionalProperties": False,
        "properties": {
            "name": name,
            "shape": shape,
            "datatype": {"type": "string", "enum": sorted(datatypes)},
            "data": {"type": "array", "description": "row-major, flat or nested as the shape"},
            "parameters": _OBJECT,
        },
    }


def protocol_openapi(spec: Spec, instance: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of both protocols; ``instance`` is the v1 row schema (oneOf)."""
    codec = V2Codec(spec)
    names = [f.name for f in spec.io.inputs]
    ints = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    column = {**ints, "minItems": 1, "maxItems": 2, "description": "[N] or [N, 1]"}
    tensors = [
        _tensor({"type": "string", "enum": [f.name]}, FITS[f.type], column, f"input {f.name} ({f.type})")
        for f in spec.io.inputs
    ]
    matrix = _tensor(
        {"type": "string", "not": {"enum": names}},
        set.intersection(*(set(FITS[f.type]) for f in spec.io.inputs)) or {"FP64"},
        {**ints, "minItems": 2, "maxItems": 2},
        f"all inputs as one tensor of shape [N, {len(names)}], columns: {', '.join(names)}",
    )
    out_tensor = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": list(codec.outputs)},
            "shape": ints,
            "datatype": {"type": "string", "enum": list(DATATYPES)},
            "data": {"type": "array"},
        },
    }
    schemas = {
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "parameters": _OBJECT,
                "inputs": {"type": "array", "minItems": 1, "items": {"oneOf": [*tensors, matrix]}},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "enum": list(codec.outputs)}, "parameters": _OBJECT},
                    },
                },
            },
        },
        "InferResponse": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": out_tensor},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _OBJECT},
                "outputs": {"type": "array", "items": _OBJECT},
            },
        },
        "KServeV1Request": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "instances": {"type": "array", "minItems": 1, "items": instance},
                "inputs": {"type": "array", "minItems": 1, "items": instance},
                "parameters": _OBJECT,
            },
        },
        "KServeV1Response": {
            "type": "object",
            "properties": {
                "predictions": {
                    "type": "array",
                    "description": "one value per instance when the response has one output, else an object per instance",
                }
            },
        },
        "ProtocolError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    }
    v2, v2v = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
    served = {"name": spec.model.name, "version": spec.model.version}
    paths = {
        "/v2/health/live": _get("Open Inference Protocol: the server is live", "Any", errors=(), served=served),
        "/v2/health/ready": _get("Open Inference Protocol: the server is ready", "Any", errors=("503",), served=served),
        "/v2": _get("Open Inference Protocol: server metadata", "Any", errors=(), served=served),
        v2: _get(
            "Model metadata: inputs and outputs with datatypes and shapes", "ModelMetadata", "name", served=served
        ),
        v2v: _get("Model metadata of a version", "ModelMetadata", "name", "version", served=served),
        f"{v2}/ready": _get("The model is ready", "Any", "name", errors=("404", "503"), served=served),
        f"{v2v}/ready": _get(
            "The model version is ready", "Any", "name", "version", errors=("404", "503"), served=served
        ),
        f"{v2}/infer": _post(
            "Infer with named tensors (one per input) or one 2-D tensor",
            "InferRequest",
            "InferResponse",
            "name",
            served=served,
        ),
        f"{v2v}/infer": _post(
            "Infer on a model version", "InferRequest", "InferResponse", "name", "version", served=served
        ),
        "/v1/models/{name}": _get("KServe v1: the model is ready", "Any", "name", errors=("404", "503"), served=served),
        "/v1/models/{name}:predict": _post(
            "KServe v1 predict: instances as rows or objects",
            "KServeV1Request",
            "KServeV1Response",
            "name",
            served=served,
        ),
    }
    return paths, schemas
