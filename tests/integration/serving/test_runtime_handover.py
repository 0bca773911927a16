"""The zero-failure handover (docs/bundle.md, last section), for real: server A serves a
steady load (mostly keep-alive, some clients opening a connection per request); server B starts
on the same port and, once ready, takes every new connection; A gets SIGTERM, drains and exits;
not one request fails, and both A and B answered some (told apart by their model version)."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import serving_bundles as bundles

pytestmark = pytest.mark.integration
CLIENTS = 8  # every fourth one opens a new connection per request
BODY = {"instances": bundles.IRIS_ROWS}
EXPECTED = ["setosa", "virginica", "versicolor"]


class Load:
    """CLIENTS threads, each with its own httpx client, looping until stopped."""

    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._loop, args=(i % 4 == 3,), daemon=True) for i in range(CLIENTS)]

    def _loop(self, close: bool) -> None:
        headers = {"connection": "close"} if close else {}
        with httpx.Client(base_url=self.url, timeout=10, headers=headers) as client:
            while not self.stop.is_set():
                version, failure = None, None
                try:
                    r = client.post("/v1/predict", json=BODY)
                    if r.status_code != 200 or [p["label"] for p in r.json()["predictions"]] != EXPECTED:
                        failure = f"predict {r.status_code}: {r.text[:200]}"
                    s = client.get("/v1/schema")
                    if s.status_code == 200:
                        version = s.json()["version"]
                    else:
                        failure = f"schema {s.status_code}: {s.text[:200]}"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    self.sent += 2
                    if failure:
                        self.failures.append(failure)
                    if version:
                        self.versions[version] += 1

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.versions)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


@pytest.mark.timeout(90)
def test_handover_fails_no_request(start_server, tmp_path: Path, iris_model, port: int) -> None:
    bundle_a = bundles.write_bundle(tmp_path / "a", iris_model, version="1", labels=bundles.IRIS_LABELS)
    bundle_b = bundles.write_bundle(tmp_path / "b", iris_model, version="2", labels=bundles.IRIS_LABELS)
    a = start_server(bundle_a, port)
    a.wait_ready()

    with Load(a.url) as load:
        time.sleep(1.0)
        b = start_server(bundle_b, port)
        b.wait_ready()
        # A's steering program sends every new connection to the newest listener, B
        fresh = Counter(httpx.get(f"{a.url}/v1/schema", timeout=10).json()["version"] for _ in range(20))
        assert fresh == {"2": 20}
        time.sleep(0.5)
        a.signal(signal.SIGTERM)
        assert a.wait_exit(timeout=20) == 0
        at_a_exit = load.snapshot()
        time.sleep(1.0)
    after = load.snapshot()

    print(
        f"\nhandover: {load.sent} requests sent, {len(load.failures)} failed; schema answers by version: {dict(after)}"
    )
    assert all(not t.is_alive() for t in load.threads)
    assert load.failures == []
    assert after["1"] > 0, "server A answered nothing"
    assert after["2"] > at_a_exit["2"], "server B answered nothing after A exited"
    assert after["1"] == at_a_exit["1"], "something answered as A after A exited"
    assert load.sent > 100
    assert b.proc.poll() is None and "Traceback" not in a.stderr + b.stderr
