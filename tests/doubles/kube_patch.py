"""Error bodies and the three PATCH flavours of the Kubernetes API, for the API server double (kube_api.py)."""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A metav1.Status, as every API error body is."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.body = status_body(code, reason, message, details)
        self.code = code


def strategic_merge(live: Any, patch: Any, key: str = "") -> Any:
    """The strategic merge patch of the fields mlops sends: maps merge, null deletes, keyed lists merge by key."""
    if isinstance(patch, dict) and isinstance(live, dict):
        out = dict(live)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge(live.get(k), v, k)
        return out
    merge_key = (
        "port" if key == "ports" and isinstance(patch, list) and patch and "port" in patch[0] else MERGE_KEYS.get(key)
    )
    if isinstance(patch, list) and isinstance(live, list) and merge_key and all(isinstance(i, dict) for i in patch):
        out = [copy.deepcopy(i) for i in live]
        for item in patch:
            match = next((i for i, old in enumerate(out) if old.get(merge_key) == item.get(merge_key)), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = strategic_merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def merge_patch(live: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(live) if isinstance(live, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/replace/remove/test on the object."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        leaf = parts[-1]
        if op["op"] in ("add", "replace"):
            if op["op"] == "replace" and isinstance(parent, dict) and leaf not in parent:
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request: replace operation does not apply: "
                    f"doc is missing key: {op['path']}",
                )
            parent[leaf] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            parent.pop(leaf, None)
        elif op["op"] == "test" and parent.get(leaf) != op["value"]:
            raise ApiError(422, "Invalid", f"testing value {op['path']} failed")
    return doc
