"""The OpenAPI 3.0 document of a bundle's HTTP surface, built from its spec: the predict body
names the real features with their types, so clients and fuzzers know what is valid."""

from __future__ import annotations

from typing import Any

from serving.oip_openapi import protocol_openapi
from serving.spec import Spec

_TYPES = {
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
}
_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json_body(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _row_schemas(spec: Spec) -> tuple[dict[str, Any], dict[str, Any]]:
    fields = spec.io.inputs
    pre = next((m.settings for m in spec.modules if m.name == "preprocessing"), {})
    keys = {name: key for key, name in pre.get("rename", {}).items()}
    categories = pre.get("categories", {})

    def prop(f: Any) -> dict[str, Any]:
        schema: dict[str, Any] = dict(_TYPES[f.type])
        if f.name in categories:
            schema["enum"] = list(categories[f.name])
        if not f.required:
            schema["nullable"] = True
        return schema

    properties = {keys.get(f.name, f.name): prop(f) for f in fields}
    properties.update({key: {"description": "accepted and ignored"} for key in pre.get("ignore", [])})
    as_object = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "required": [keys.get(f.name, f.name) for f in fields if f.required],
    }
    kinds = [_TYPES[t] for t in dict.fromkeys(f.type for f in fields)]
    as_list = {
        "type": "array",
        "minItems": len(fields),
        "maxItems": len(fields),
        "description": "values in schema order: " + ", ".join(f.name for f in fields),
        "items": kinds[0] if len(kinds) == 1 else {"anyOf": kinds},
    }
    return as_object, as_list


def openapi_document(spec: Spec) -> dict[str, Any]:
    model = spec.model
    as_object, as_list = _row_schemas(spec)
    outputs = {o.name: _TYPES[o.type] for o in spec.io.outputs}

    def get(summary: str, ref: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": {"200": {"description": "OK", **_json_body(ref)}}}}

    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": f"{model.name} {model.version}",
            "version": model.version,
            "description": f"{model.task} model {model.name} (sha256 {model.sha256})",
        },
        "paths": {
            "/v1/predict": {
                "post": {
                    "summary": "Predict for one or more instances",
                    "requestBody": {"required": True, **_json_body("PredictRequest")},
                    "responses": {
                        "200": {"description": "one prediction per instance", **_json_body("PredictResponse")},
                        "400": _ERROR,
                        "413": _ERROR,
                        "422": _ERROR,
                        "503": _ERROR,
                    },
                }
            },
            "/v1/schema": get("The model's inputs and outputs", "Any"),
            "/v1/drift": get("PSI per feature against the reference data", "Any"),
            "/health/live": get("The process is up", "Any"),
            "/health/ready": get("The model is loaded and verified", "Any"),
        },
        "components": {
            "schemas": {
                "PredictRequest": {
                    "type": "object",
                    "required": ["instances"],
                    "additionalProperties": False,
                    "properties": {
                        "instances": {"type": "array", "minItems": 1, "items": {"oneOf": [as_object, as_list]}}
                    },
                },
                "PredictResponse": {
                    "type": "object",
                    "properties": {
                        "predictions": {"type": "array", "items": {"type": "object", "properties": outputs}}
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
                "Any": {"type": "object"},
            }
        },
    }
    paths, schemas = protocol_openapi(spec, {"oneOf": [as_object, as_list]})  # Open Inference Protocol, KServe v1
    doc["paths"].update(paths)
    doc["components"]["schemas"].update(schemas)
    return doc
