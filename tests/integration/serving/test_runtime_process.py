"""``python -m serving`` as a real process: it serves, drains and stops on SIGTERM, and refuses
to start (one line on stderr, the documented exit code) when it cannot serve the bundle."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
import serving_bundles as bundles
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def test_serves_over_http_and_stops_cleanly_on_sigterm(start_server, iris_bundle: Path, port: int) -> None:
    server = start_server(iris_bundle, port)
    info = server.wait_ready()
    sha = bundles.sha256_file(iris_bundle / "model" / "model.joblib")
    assert info == {"pid": server.proc.pid, "host": "127.0.0.1", "port": port, "sha256": sha}

    with httpx.Client(base_url=server.url, timeout=5) as client:
        r = client.post("/v1/predict", json={"instances": bundles.IRIS_ROWS})
        assert r.status_code == 200
        assert [p["label"] for p in r.json()["predictions"]] == ["setosa", "virginica", "versicolor"]
        assert client.get("/health/ready").json()["sha256"] == sha
        metrics = client.get("/metrics").text
    names = {f.name for f in text_string_to_metric_families(metrics)}
    assert {"mlops_http_requests", "mlops_model_info", "mlops_predictions", "mlops_module_duration_seconds"} <= names
    assert "_created" not in metrics

    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=15) == 0
    assert not server.ready_file.exists()
    assert "draining" in server.stderr and "Traceback" not in server.stderr


def test_draining_answers_503_on_ready_and_closes_connections(
    start_server, tmp_path: Path, iris_model, port: int
) -> None:
    bundle = bundles.write_bundle(tmp_path / "slow-drain", iris_model, drain_seconds=3.0)
    server = start_server(bundle, port)
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/health/ready").status_code == 200
        server.signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while client.get("/health/ready").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.headers["connection"] == "close"
        predict = client.post("/v1/predict", json={"instances": bundles.IRIS_ROWS[:1]})
        assert predict.status_code == 200 and predict.headers["connection"] == "close"
    started = time.monotonic()
    assert server.wait_exit(timeout=15) == 0
    assert time.monotonic() - started > 1.0  # it waited for the drain period


def test_drain_until_idle_stops_once_no_connection_is_open(start_server, tmp_path: Path, iris_model, port: int) -> None:
    bundle = bundles.write_bundle(tmp_path / "idle-drain", iris_model, drain_seconds=20.0)
    server = start_server(bundle, port, "--drain-until-idle")
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=5) as client:  # a keep-alive connection keeps it draining
        assert client.get("/health/ready").status_code == 200
        server.signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.proc.poll() is None
        predict = client.post("/v1/predict", json={"instances": bundles.IRIS_ROWS[:1]})
        assert predict.status_code == 200 and predict.headers["connection"] == "close"
    started = time.monotonic()  # the last connection is closed: it stops well before its 20 s drain
    assert server.wait_exit(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert "drained: no connection open" in server.stderr


def test_drain_until_idle_from_the_environment_without_connections(
    start_server, tmp_path: Path, iris_model, port: int, monkeypatch
) -> None:
    monkeypatch.setenv("SERVING_DRAIN_UNTIL_IDLE", "1")  # how the local and container targets ask for it
    bundle = bundles.write_bundle(tmp_path / "idle-drain-env", iris_model, drain_seconds=20.0)
    server = start_server(bundle, port)
    server.wait_ready()
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=10) == 0
    assert time.monotonic() - started < 10 and "drained: no connection open" in server.stderr


def test_drain_until_idle_answers_the_connections_waiting_in_its_accept_queue(
    start_server, tmp_path: Path, iris_model, port: int
) -> None:
    """Connections the kernel queued before the stop are accepted and answered, not reset: the server is
    paused (SIGSTOP) while they connect and send, then told to stop and resumed."""
    bundle = bundles.write_bundle(tmp_path / "queued", iris_model, drain_seconds=20.0)
    server = start_server(bundle, port, "--drain-until-idle")
    server.wait_ready()
    server.signal(signal.SIGSTOP)
    clients = []
    try:
        for _ in range(20):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"GET /health/live HTTP/1.1\r\nhost: test\r\n\r\n")
            clients.append(client)
        server.signal(signal.SIGTERM)
    finally:
        server.signal(signal.SIGCONT)
    answers = []
    for client in clients:
        with client:
            data = b""
            while chunk := client.recv(65536):  # connection: close while draining: read to the end
                data += chunk
            answers.append(data.split(b"\r\n", 1)[0])
    assert answers == [b"HTTP/1.1 200 OK"] * 20
    assert server.wait_exit(timeout=10) == 0
    assert "drained: no connection open" in server.stderr


def test_a_second_signal_stops_at_once(start_server, tmp_path: Path, iris_model, port: int) -> None:
    bundle = bundles.write_bundle(tmp_path / "long-drain", iris_model, drain_seconds=60.0)
    server = start_server(bundle, port)
    server.wait_ready()
    server.signal(signal.SIGTERM)
    time.sleep(0.3)
    server.signal(signal.SIGINT)
    assert server.wait_exit(timeout=10) == 0


def test_port_in_use_exits_2_with_one_line(start_server, iris_bundle: Path) -> None:
    with socket.socket() as holder:  # no SO_REUSEPORT: nobody may join
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = start_server(iris_bundle, port)
        assert server.wait_exit(timeout=30) == 2
    assert server.stderr == f"error: cannot bind 127.0.0.1:{port}: address already in use\n"
    assert not server.ready_file.exists()


def test_corrupt_artifact_exits_1_with_one_line_and_no_traceback(start_server, iris_bundle: Path, port: int) -> None:
    artifact = iris_bundle / "model" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    server = start_server(iris_bundle, port)
    assert server.wait_exit(timeout=30) == 1
    stderr = server.stderr
    assert stderr.startswith("error: model artifact model/model.joblib sha256 mismatch: expected ")
    assert stderr.endswith(" (corrupt or altered artifact)\n")
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not server.ready_file.exists()


def test_invalid_spec_exits_1_with_one_line(start_server, iris_bundle: Path, port: int) -> None:
    bundles.edit_spec(iris_bundle, lambda d: d["server"].update(max_body_bytes=-1))
    server = start_server(iris_bundle, port)
    assert server.wait_exit(timeout=30) == 1
    assert server.stderr.startswith("error: spec.json: server.max_body_bytes: ")
    assert server.stderr.count("\n") == 1
