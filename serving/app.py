"""The ASGI app: ``create_app(spec, bundle_dir, registry)``; nothing is built at import time.

Routes (docs/bundle.md): ``POST /v1/predict``, ``GET /v1/schema``, ``GET /v1/drift``,
``GET /openapi.json``, ``GET /health/live``, ``GET /health/ready``, ``GET /metrics``, and the Open
Inference Protocol v2 and KServe v1 routes (:mod:`serving.oip_routes`). The model
is loaded by the app's lifespan startup (which then starts the batcher), so a server that runs
the lifespan before listening (uvicorn does) never answers before the model is verified.
``POST /v1/predict`` is a plain ASGI endpoint served ahead of Starlette's stack
(:mod:`serving.asgi`); its body is decoded by the chain, not by pydantic (speed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from serving.admission import ByteBudget
from serving.asgi import PredictEndpoint, ServingApp
from serving.batching import Batcher
from serving.errors import BundleError, error_response, install_error_handlers, one_line
from serving.jsonio import dumps
from serving.metrics import Metrics
from serving.middleware import HTTPMetricsMiddleware
from serving.modules import build_modules
from serving.oip_routes import ProtocolRoutes
from serving.openapi import openapi_document
from serving.pipeline import ModuleContext, Pipeline
from serving.spec import Spec

JSON = "application/json"


class ServingState:
    """Lifecycle flags read by the routes, the middleware and the server runner."""

    def __init__(self) -> None:
        self.ready = False  # the model is loaded and verified
        self.draining = False  # a stop was asked for: ready answers 503, responses close
        self.load_error: BundleError | None = None
        # Who this server is, reported on /health/ready: pid, and what the deployer named it
        # (--instance, --revision), so a deployer counts only the process it started.
        self.identity: dict[str, Any] = {"pid": os.getpid()}
        self.handover: Any | None = None  # serving.handover.Handover with --await-handover

    def start_draining(self) -> None:
        self.draining = True


def create_app(spec: Spec, bundle_dir: str | Path, registry: CollectorRegistry) -> ServingApp:
    """Build the app for ``spec``; metrics go to ``registry``; the model loads at lifespan startup.

    ``app.state.serving`` is the :class:`ServingState`, ``app.state.pipeline`` the chain.
    Module settings and outputs are checked here (BundleError), the artifact at startup.
    """
    metrics = Metrics.create(registry)
    ctx = ModuleContext(spec, Path(bundle_dir), metrics)
    pipeline = Pipeline(build_modules(ctx), metrics.module_duration)
    server = spec.server
    batcher = Batcher(
        pipeline,
        metrics,
        max_batch_requests=server.max_batch_requests,
        max_batch_wait_ms=server.max_batch_wait_ms,
        max_queue=server.max_queue,
        max_batch_bytes=server.max_batch_bytes,
        offload_bytes=server.offload_bytes,
    )
    state = ServingState()
    model = spec.model
    ready_fields = {"status": "ready", "name": model.name, "version": model.version, "sha256": model.sha256}
    schema_body = dumps(
        {
            "name": model.name,
            "version": model.version,
            "task": model.task,
            "inputs": [f.model_dump() for f in spec.io.inputs],
            "outputs": [f.model_dump() for f in spec.io.outputs],
        }
    )

    @asynccontextmanager
    async def lifespan(app: ServingApp) -> AsyncIterator[None]:
        try:
            await pipeline.load()
        except BundleError as exc:
            state.load_error = exc
            raise
        except Exception as exc:
            state.load_error = BundleError(f"cannot start: {type(exc).__name__}: {one_line(exc)}")
            raise state.load_error from exc
        # A stop asked for while loading (a deployer that timed out, an abort): never listen.
        if state.handover is not None:
            try:
                await state.handover.wait(state)
            except Exception as exc:
                state.load_error = BundleError(one_line(exc))
                raise state.load_error from exc
        if state.draining:
            state.load_error = BundleError("stopped before it listened (a stop signal came while the model loaded)")
            raise state.load_error
        batcher.start()
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await batcher.stop()

    openapi_body = dumps(openapi_document(spec))

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type=JSON)

    async def drift(request: Request) -> Response:
        report = ctx.shared.get("drift_report")
        if report is None:
            return error_response(404, "not_found", "the drift module is not in this bundle's chain")
        return Response(dumps(report()), media_type=JSON)

    async def schema(request: Request) -> Response:
        return Response(schema_body, media_type=JSON)

    async def live(request: Request) -> Response:
        return Response(b'{"status":"alive"}', media_type=JSON)

    async def ready(request: Request) -> Response:
        if state.draining:
            return error_response(503, "draining", "the server is draining and will stop shortly")
        if not state.ready:
            return error_response(503, "not_ready", "the model is not loaded yet")
        return Response(dumps({**ready_fields, **state.identity}), media_type=JSON)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    predict = PredictEndpoint(state, batcher, server.max_body_bytes)
    routes = [
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/schema", schema, methods=["GET"]),
        Route("/v1/drift", drift, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    # admission control (serving.admission): one byte budget for every predict route
    budget = ByteBudget(server.max_inflight_bytes, metrics.queue_rejected)
    protocols = ProtocolRoutes(
        spec, state, batcher, server.max_body_bytes, budget
    )  # Open Inference Protocol, KServe v1
    routes += protocols.routes
    app = ServingApp(routes=list[BaseRoute](routes), lifespan=lifespan)
    app.state.serving = state
    app.state.pipeline = pipeline
    app.state.metrics = metrics
    app.state.batcher = batcher
    app.state.budget = budget
    install_error_handlers(app)
    templates = [r.path for r in routes]
    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics, state=state, templates=templates)
    http = HTTPMetricsMiddleware(None, metrics, state, templates)  # its observe() only
    app.fast_routes = {
        ("POST", "/v1/predict"): PredictEndpoint(state, batcher, server.max_body_bytes, http, budget),
        **protocols.fast_routes(http),
    }
    return app
