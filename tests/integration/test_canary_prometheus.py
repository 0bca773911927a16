"""A real Prometheus scrapes a canary's two servers through the file_sd file the local target writes
(issue 15): every series carries `track` and `env`, and each member's `selector` picks its own series."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import free_port, require_tool
from test_canary_local import _haproxy, prepared, two_revisions  # noqa: F401 (fixtures)

from mlops_cli.state import State
from mlops_cli.targets import Release, no_journal
from mlops_cli.targets.local import LocalTarget

pytestmark = pytest.mark.integration

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def prometheus_for(tmp_path: Path):
    """start(file_sd_path) -> URL of a real Prometheus scraping the targets of that file every second."""
    binary = require_tool("prometheus")
    procs = []

    def start(file_sd: Path) -> str:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "mlops-prod", "file_sd_configs": [{"files": [str(file_sd)], "refresh_interval": "1s"}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")
        procs.append(
            (
                subprocess.Popen(
                    [
                        binary,
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                ),
                log,
            )
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert procs[-1][0].poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready"
            time.sleep(0.2)

    start.procs = procs  # type: ignore[attr-defined]  # a test may stop its Prometheus mid-run
    yield start
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def query(prom: str, expr: str) -> list[dict]:
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_prometheus_scrapes_both_tracks_through_the_file_sd_the_target_writes(two_revisions, prometheus_for):
    s = two_revisions()
    target = LocalTarget(s)
    state = State.load(s.workdir)
    canary = target.canary_start("prod", Release(bundle=Path(state.bundle.path)), state.deployments["prod"], no_journal)
    canary = target.canary_set_weight(canary, 50, no_journal)
    prom = prometheus_for(target.file_sd_path("prod"))
    try:
        wait_for(lambda: len(query(prom, 'up{env="prod"} == 1')) == 2, 30, "both members up in Prometheus")
        with httpx.Client(base_url=canary.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for _ in range(100):
                assert http.post("/v1/predict", json={"instances": [ROW]}).status_code == 200
        expr = 'sum by (track) (mlops_predictions_total{env="prod"})'

        def counted():
            tracks = {r["metric"]["track"]: float(r["value"][1]) for r in query(prom, expr)}
            return tracks if sum(tracks.values()) >= 100 else None  # every prediction scraped

        by_track = wait_for(counted, 30, "the 100 predictions in Prometheus")
        assert sum(by_track.values()) == 100 and 30 <= by_track["canary"] <= 70, by_track  # 50 % each, roughly
        for member in (canary.stable, canary.canary):  # each member's selector picks its own series
            up = query(prom, f"up{{{member.selector}}}")
            assert [r["metric"]["instance"] for r in up] == [member.url.removeprefix("http://")]
            assert up[0]["metric"]["revision"] == str(member.revision)
    finally:
        target.canary_abort(canary, no_journal)
    # after the canary, the file names the one server on the env's port (tracked as stable)
    wait_for(
        lambda: (
            [r["metric"]["instance"] for r in query(prom, 'up{env="prod",track="stable"} == 1')]
            == [f"127.0.0.1:{s.deploy.prod.port}"]
        ),
        30,
        "Prometheus follows the file back to one server",
    )
