"""Domain errors and the one place that turns them into HTTP answers.

A request error carries its HTTP status and a short code; every error response is JSON
``{"error": {"code": ..., "message": ...}}`` and never a traceback. :class:`BundleError` is the
other kind: the bundle cannot be served at all (bad spec, missing or altered artifact), which
``python -m serving`` turns into one ``error: ...`` line and a non-zero exit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # starlette is imported where an answer is made: the toolkit reads BundleError without it
    from starlette.requests import Request
    from starlette.responses import Response

log = logging.getLogger("serving")


def one_line(text: object) -> str:
    """Collapse a message (an exception's text, say) to a single line."""
    return " ".join(str(text).split())


class BundleError(Exception):
    """The bundle cannot be served; the message is one line, shown as ``error: <message>``."""


class ServingError(Exception):
    """A request that cannot be answered; ``status`` and ``code`` say why."""

    status = 500
    code = "internal_error"
    headers: ClassVar[Mapping[str, str] | None] = None  # extra response headers, per error class

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class BadRequest(ServingError):
    """400: the body is not JSON, or not ``{"instances": [...]}``."""

    status, code = 400, "bad_request"


class PayloadTooLarge(ServingError):
    """413: the body is over ``server.max_body_bytes``."""

    status, code = 413, "payload_too_large"
    headers: ClassVar[Mapping[str, str] | None] = {"connection": "close"}  # the rest of the body is not read


class TooManyInstances(ServingError):
    """413: more instances in one request than ``server.max_rows``."""

    status, code = 413, "too_many_instances"


class InvalidInstance(ServingError):
    """422: an instance does not match the input schema; the message names index and feature."""

    status, code = 422, "invalid_instance"


class NotReady(ServingError):
    """503: the model is not loaded yet, or the server is draining."""

    status, code = 503, "not_ready"


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    from starlette.responses import Response

    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app) -> None:
    """Route every error through the JSON shape above (the app is a Starlette app)."""
    from starlette.exceptions import HTTPException

    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
