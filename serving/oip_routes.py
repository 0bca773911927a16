"""The Open Inference Protocol (v2) and KServe v1 routes, beside ``/v1/predict`` on the same chain.

v2: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata),
``GET /v2/models/{name}[/versions/{version}]`` (model metadata), ``.../ready`` and
``POST .../infer``; KServe v1: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict``.
Bodies are coded by :mod:`serving.oip` and :mod:`serving.kserve_v1`. Infer and predict are :class:`ProtocolEndpoint`, plain
ASGI endpoints like ``/v1/predict``: the served model's exact paths are fast routes (no
Starlette stack); the templated routes answer other names with 404. Both go through the batcher,
so through the same module chain and metrics (the route label is the template). Every error is
the protocol's ``{"error": "<message>"}``; a request the chain refuses (422 on ``/v1/predict``)
is 400 here, as KServe and Triton answer invalid input.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import metadata
from types import SimpleNamespace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.asgi import ClientGone, PredictEndpoint, read_body
from serving.errors import NotReady, ServingError, one_line
from serving.jsonio import dumps
from serving.kserve_v1 import decode_v1, encode_v1
from serving.oip import V2Codec
from serving.spec import Spec

log = logging.getLogger("serving")
JSON = "application/json"
V2 = "/v2/models/{name}"
V2_VERSION = "/v2/models/{name}/versions/{version}"
V1_MODEL = "/v1/models/{name}"
V1_PREDICT = "/v1/models/{name}:predict"
_BINARY_HEADER = b"inference-header-content-length"  # Triton's binary tensor extension


def protocol_error(status: int, message: str) -> Response:
    return Response(dumps({"error": message}), status_code=status, media_type=JSON)


def _server_version() -> str:
    try:
        return metadata.version("mlops")
    except metadata.PackageNotFoundError:  # a bundle carries the runtime without package metadata
        return "unknown"


class ProtocolEndpoint(PredictEndpoint):
    """``POST .../infer`` or ``:predict``: decode -> batcher (the chain) -> encode.

    ``codec`` has ``decode(body) -> (rows, context)`` and ``encode(predictions, context) ->
    bytes``. ``check(path_params)`` returns a 404 message for a model this server does not
    serve (the templated routes; a fast route is the served model's and has None)."""

    def __init__(
        self,
        state: Any,
        batcher: Any,
        limit: int,
        http: Any,
        *,
        template: str,
        codec: Any,
        check: Any,
        budget: Any = None,
    ):
        super().__init__(state, batcher, limit, http, budget)
        self.route = SimpleNamespace(path=template)
        self.codec = codec
        self.check = check

    async def _answer(self, scope: dict, receive: Any, held: list[int]) -> tuple[int, bytes, Mapping[str, str] | None]:
        try:
            unknown = self.check is not None and self.check(scope.get("path_params"))
            if unknown:
                return 404, dumps({"error": unknown}), None
            if not self.state.ready:
                raise NotReady("the model is not loaded yet")
            rows, context = self.codec.decode(await read_body(scope, receive, self.limit, self.budget, held))
            predictions = await self.batcher.submit(rows)
            try:
                answer = self.codec.encode(predictions, context)
            except ValueError:
                raise ServingError("the model produced a non-finite value", code="prediction_failed") from None
            if (
                held[0] and self.budget is not None and len(answer) > held[0]
            ):  # the answer is held until sent: count it, as /v1/predict does
                self.budget.force(len(answer) - held[0])
                held[0] = len(answer)
            return 200, answer, None
        except ClientGone:
            return 499, b"", None
        except ServingError as exc:
            message = exc.message
            if exc.status == 400 and any(k == _BINARY_HEADER for k, _ in scope["headers"]):
                message = "the binary tensor data extension is not supported: send the tensors' data as JSON"
            return (400 if exc.status == 422 else exc.status), dumps({"error": message}), exc.headers
        except Exception as exc:
            log.error("unhandled error on POST %s: %s: %s", self.route.path, type(exc).__name__, one_line(exc))
            return 500, dumps({"error": "internal server error"}), None


class RoutedProtocolEndpoint(ProtocolEndpoint):
    """The endpoint on a templated Starlette route: it puts its template in the scope for the
    metrics' route label (FastAPI's router does not, for plain routes)."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        scope.setdefault("route", self.route)
        await super().__call__(scope, receive, send)


class _V1:
    @staticmethod
    def decode(body: bytes) -> tuple[list[Any], None]:
        return decode_v1(body), None

    @staticmethod
    def encode(predictions: list[dict[str, Any]], context: None) -> bytes:
        return encode_v1(predictions)


class ProtocolRoutes:
    """The routes of both protocols for one served model; ``fast_routes(http)`` for ServingApp."""

    def __init__(self, spec: Spec, state: Any, batcher: Any, limit: int, budget: Any = None):
        self.name, self.version = spec.model.name, spec.model.version
        self.state, self.batcher, self.limit, self.budget = state, batcher, limit, budget
        self.v2 = V2Codec(spec)
        self.codecs = {f"{V2}/infer": self.v2, f"{V2_VERSION}/infer": self.v2, V1_PREDICT: _V1()}
        self.server_body = dumps({"name": "mlops-serving", "version": _server_version(), "extensions": []})
        self.metadata_body = dumps(self.v2.metadata())
        get = self._get
        self.routes = [
            get("/v2/health/live", self.live),
            get("/v2/health/ready", self.ready),
            get("/v2", self.server),
            get(V2, self.model),
            get(V2_VERSION, self.model),
            get(f"{V2}/ready", self.model_ready),
            get(f"{V2_VERSION}/ready", self.model_ready),
            *(Route(t, self.endpoint(t, None), methods=["POST"]) for t in self.codecs),
            get(V1_MODEL, self.v1_model),
        ]

    @staticmethod
    def _get(template: str, handler: Any) -> Route:
        """A GET route whose requests carry their template as the metrics' route label (FastAPI's
        router puts no ``route`` in the scope for plain Starlette routes)."""
        label = SimpleNamespace(path=template)

        async def endpoint(request: Request) -> Response:
            request.scope.setdefault("route", label)
            return await handler(request)

        return Route(template, endpoint, methods=["GET"])

    def endpoint(self, template: str, http: Any, fast: bool = False) -> ProtocolEndpoint:
        kind = ProtocolEndpoint if fast else RoutedProtocolEndpoint
        return kind(
            self.state,
            self.batcher,
            self.limit,
            http,
            template=template,
            codec=self.codecs[template],
            check=None if fast else self.unknown,
            budget=self.budget,
        )

    def fast_routes(self, http: Any) -> dict[tuple[str, str], ProtocolEndpoint]:
        """The served model's exact infer/predict paths -> endpoints that record ``http`` metrics."""
        paths = {
            f"{V2}/infer": f"/v2/models/{self.name}/infer",
            f"{V2_VERSION}/infer": f"/v2/models/{self.name}/versions/{self.version}/infer",
            V1_PREDICT: f"/v1/models/{self.name}:predict",
        }
        for template, path in paths.items():  # the metrics' route label of the exact path: its template
            http.templates[path] = template
        return {("POST", path): self.endpoint(template, http, fast=True) for template, path in paths.items()}

    def unknown(self, params: dict[str, str] | None) -> str | None:
        """The 404 message for a model name or version not served here, else None."""
        if not params:
            return None
        name, version = params.get("name"), params.get("version", self.version)
        if name != self.name:
            return f"model {name!r} not found (this server serves {self.name!r})"
        if version != self.version:
            return f"model {name!r} has no version {version!r} (this server serves version {self.version!r})"
        return None

    def _not_ready(self) -> str | None:
        if self.state.draining:
            return "the server is draining and will stop shortly"
        return None if self.state.ready else "the model is not loaded yet"

    async def live(self, request: Request) -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    async def ready(self, request: Request) -> Response:
        problem = self._not_ready()
        return protocol_error(503, problem) if problem else Response(b'{"ready":true}', media_type=JSON)

    async def server(self, request: Request) -> Response:
        return Response(self.server_body, media_type=JSON)

    async def model(self, request: Request) -> Response:
        unknown = self.unknown(request.path_params)
        return protocol_error(404, unknown) if unknown else Response(self.metadata_body, media_type=JSON)

    async def model_ready(self, request: Request) -> Response:
        unknown = self.unknown(request.path_params)
        if unknown:
            return protocol_error(404, unknown)
        problem = self._not_ready()
        if problem:
            return protocol_error(503, problem)
        return Response(dumps({"name": self.name, "ready": True}), media_type=JSON)

    async def v1_model(self, request: Request) -> Response:
        unknown = self.unknown(request.path_params)
        if unknown:
            return protocol_error(404, unknown)
        ready = self._not_ready() is None
        return Response(dumps({"name": self.name, "ready": ready}), status_code=200 if ready else 503, media_type=JSON)
