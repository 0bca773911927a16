"""A real Prometheus scrapes a canary's two servers through the file_sd file the local target writes
(issue 15): every series carries `track` and `env`, and each member's `selector` picks its own series."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from helpers import require_tool
from prometheus_proc import query, start_prometheus, stop_prometheus, wait_for
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
        proc, log, url = start_prometheus(binary, tmp_path / "prometheus.yml", tmp_path)
        procs.append((proc, log))
        return url

    start.procs = procs  # type: ignore[attr-defined]  # a test may stop its Prometheus mid-run
    yield start
    for proc, log in procs:
        stop_prometheus(proc, log)


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
