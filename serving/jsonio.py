"""JSON in and out of the hot path: orjson when installed (several times faster), else json.

Decoding tries orjson first and falls back to json on anything orjson refuses, so the answers
never depend on which is installed: json accepts the NaN/Infinity tokens (the validator then
refuses them by name) and words the error for malformed bodies. Encoding never writes NaN or
infinity: orjson would write ``null``, so a body containing ``null`` is encoded again by json
with ``allow_nan=False``, which raises ValueError for a non-finite number.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the runtime works without it, only slower
    orjson = None  # type: ignore[assignment]


def loads(body: bytes) -> Any:
    """Decode a request body; raises ValueError or RecursionError like json.loads."""
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body, parse_constant=float)


def dumps(obj: Any) -> bytes:
    """Encode compact JSON; ValueError for NaN or infinity."""
    if orjson is not None:
        body = orjson.dumps(obj)
        if b"null" not in body:
            return body
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
