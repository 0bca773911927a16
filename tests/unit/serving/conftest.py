"""Fixtures for the serving unit tests: trained models, bundles, and an in-process client.

The client talks to the ASGI app through httpx.ASGITransport with the app's lifespan entered,
so the model is loaded and verified exactly as in a real server; each app gets a fresh
CollectorRegistry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from serving_bundles import IRIS_LABELS, train_diabetes, train_iris, write_bundle


@dataclass
class Served:
    app: Any
    client: httpx.AsyncClient
    registry: CollectorRegistry


@asynccontextmanager
async def serve(bundle_dir: Path) -> AsyncIterator[Served]:
    """Build the app for a bundle, run its lifespan startup, and yield a client for it."""
    from serving.app import create_app
    from serving.spec import load_spec

    registry = CollectorRegistry()
    app = create_app(load_spec(bundle_dir), bundle_dir, registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving.test") as client:
            yield Served(app, client, registry)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def iris_model() -> Any:
    return train_iris()


@pytest.fixture(scope="session")
def diabetes_model() -> tuple[Any, list[str]]:
    return train_diabetes()


@pytest.fixture
def iris_bundle(tmp_path: Path, iris_model: Any) -> Path:
    return write_bundle(tmp_path / "iris", iris_model, labels=IRIS_LABELS)


@pytest.fixture
def served() -> Callable[[Path], Any]:
    """``async with served(bundle) as s: await s.client.post(...)``"""
    return serve


@pytest.fixture
async def iris(iris_bundle: Path) -> AsyncIterator[Served]:
    async with serve(iris_bundle) as s:
        yield s
