"""Fixtures for the kubernetes target: the API server double, a shipped model, settings on both."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from doubles.kube_api import KubeApiDouble
from helpers import register_iris
from kubetools import digest_ref, set_image

from mlops_cli.config import load_settings


@pytest.fixture
def kube() -> KubeApiDouble:
    double = KubeApiDouble()
    double.url = double.start()
    yield double
    double.stop()


@pytest.fixture
def kube_settings(tmp_path: Path, kube: KubeApiDouble) -> Callable[..., Any]:
    """Settings for the kubernetes target on the double (server + token), fast polling; overrides merge in."""

    def build(**overrides: Any):
        # the double speaks plain http on 127.0.0.1: a token goes there only with insecure: true
        k8s = {
            "server": kube.url,
            "token": kube.token,
            "insecure": True,
            "poll_interval_s": 0.005,
            "retry_backoff_s": 0.005,
            "rollout_timeout_s": 60,
            "progress_deadline_s": 30,
        }
        k8s.update(overrides.pop("kubernetes", {}))
        flags = {"workdir": tmp_path / "work", "deploy": {"target": "kubernetes"}, "kubernetes": k8s}
        flags.update(overrides)
        return load_settings(None, flags, environ={})

    return build


@pytest.fixture
def shipped(kube_settings, iris_artifact: Path):
    """A validated and assembled iris model in the work directory, its image pushed as digest 'a'."""
    from mlops_cli.stages import assemble_server, validate_model

    settings = kube_settings()
    ref = register_iris(settings, iris_artifact)
    settings = kube_settings(model=ref, validation={"thresholds": {"accuracy": ">= 0.9"}})
    validate_model.run(settings)
    assemble_server.run(settings)
    set_image(settings, digest_ref("a"))
    return settings


class SlackStandIn:
    """A local HTTP server standing in for a Slack incoming webhook: records what is posted, answers `ok`."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXXX"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack() -> SlackStandIn:
    stand_in = SlackStandIn()
    yield stand_in
    stand_in.stop()
