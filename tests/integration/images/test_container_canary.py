"""Canary releases on the container target (issue 15): the stable copy and the canary as real podman
containers on their own host ports, the real HAProxy on the host on the env's port, bounded real
load through that port. The analysis is injected into the engine (`analyse=`): it checks that both
members answer as the containers the target reports (labelled with their track), then returns the
verdict the test scripts — the measurements themselves are tested with the local target."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest
from helpers import Load, read_state, register_iris, require_tool
from test_image_pipeline import image_settings, other_model

from mlops_cli import run_all
from mlops_cli.canary import engine, haproxy
from mlops_cli.canary.analysis import AnalysisResult, Measurement
from mlops_cli.errors import StageFailed
from mlops_cli.stages import assemble_server, build_image, validate_model
from mlops_cli.state import State
from mlops_cli.targets.container import ContainerTarget

pytestmark = pytest.mark.integration

STEPS = [{"set_weight": 10}, {"pause": 1}, {"analysis": "default"}]


class Scripted:
    """An injected analysis returning `verdict` after checking the two members are the containers named."""

    def __init__(self, verdict: str):
        self.verdict, self.calls = verdict, []

    def __call__(self, settings, template, canary, *, window_s, sleep):
        for member in (canary.stable, canary.canary):
            ready = httpx.get(member.url + "/health/ready", timeout=5).json()
            assert ready["instance"] == member.handle and ready["revision"] == member.revision
            assert member.image and "@sha256:" in member.image
            labels = json.loads(
                subprocess.run(
                    ["podman", "inspect", "--format", "{{json .Config.Labels}}", member.handle],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                ).stdout
            )
            assert labels["io.mlops.track"] == member.track and labels["io.mlops.env"] == canary.env
        assert canary.url == f"http://{settings.deploy.prod.host}:{settings.deploy.prod.port}"
        self.calls.append(canary.weight)
        m = Measurement("prediction_shift", "prediction_shift", 0.4, 0.0, self.verdict, f"scripted {self.verdict}")
        return AnalysisResult(template, self.verdict, (m,), f"scripted {self.verdict} at {canary.weight} %")


def only_one_container(s, prod: dict) -> None:
    """The one container state names answers on the port; no canary container, no HAProxy, no canary file."""
    target = ContainerTarget(s)
    observed = target.observe("prod")
    assert [c.ident for c in observed.servers] == [prod["handle"]]
    assert observed.serving == prod["handle"]
    assert haproxy.running_pid(target.haproxy_dir, "prod") is None
    assert target.canary_observe("prod", None) is None
    tracks = subprocess.run(
        [
            "podman",
            "ps",
            "-a",
            "--filter",
            "label=io.mlops.track",
            "--filter",
            f"label=io.mlops.workdir={s.workdir.resolve()}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert tracks == []


def prepared(make_settings, settings, registry, base_image, iris_artifact, tmp_path):
    """prod serves model 1 in a container (revision 1); model 2's image is built; rollout.strategy canary."""
    require_tool("haproxy")
    first = image_settings(
        make_settings, settings, "buildah", registry, base_image, model=register_iris(settings, iris_artifact)
    )
    assert run_all.run(first).passed
    v1 = read_state(settings.workdir)["deployments"]["prod"]
    second = image_settings(
        make_settings,
        settings,
        "buildah",
        registry,
        base_image,
        model=register_iris(settings, other_model(tmp_path)),
        rollout={"strategy": "canary", "steps": STEPS, "analysis_retry_s": 0.5},
    )
    for stage in (validate_model, assemble_server, build_image):
        stage.run(second)
    image = State.load(settings.workdir).require_image().reference
    assert image != v1["image"]
    return second, v1, image


@pytest.mark.timeout(300)  # an image build and a pipeline on a shared 2-core machine (about 1 min here)
def test_container_canary_is_promoted_under_load_with_no_failed_request(
    make_settings, settings, registry, base_image, iris_artifact, tmp_path
):
    second, v1, image = prepared(make_settings, settings, registry, base_image, iris_artifact, tmp_path)
    state = State.load(settings.workdir)
    passing = Scripted("pass")
    with Load(v1["url"]) as load:
        record = engine.run(second, state, "prod", ContainerTarget(second), analyse=passing, image=image)
    print(f"promote: {load.ok} answered, {load.failed} failed {load.failures[:3]}")
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 20
    assert passing.calls == [10]
    saved = read_state(settings.workdir)
    prod = saved["deployments"]["prod"]
    assert prod["revision"] == 2 == record.revision and prod["image"] == image and prod["url"] == v1["url"]
    assert prod["model_version"] != v1["model_version"]
    assert saved["canaries"]["prod"]["status"] == "promoted" and saved["intents"] == {}
    assert [st["outcome"] for st in saved["canaries"]["prod"]["steps"]] == ["done", "done", "pass"]
    assert saved["rollouts"]["prod"]["outcome"] == "succeeded"
    ready = httpx.get(prod["url"] + "/health/ready", timeout=5).json()
    assert ready["instance"] == prod["handle"] and ready["revision"] == 2
    only_one_container(second, prod)
    sd = json.loads((settings.workdir.resolve() / "prometheus" / "targets-prod.json").read_text())
    assert [t["labels"]["track"] for t in sd] == ["stable"] and sd[0]["labels"]["revision"] == "2"


@pytest.mark.timeout(300)
def test_container_canary_failing_analysis_is_aborted_and_stable_serves(
    make_settings, settings, registry, base_image, iris_artifact, tmp_path
):
    second, v1, image = prepared(make_settings, settings, registry, base_image, iris_artifact, tmp_path)
    state = State.load(settings.workdir)
    failing = Scripted("fail")
    with Load(v1["url"]) as load:
        with pytest.raises(StageFailed) as failed:
            engine.run(second, state, "prod", ContainerTarget(second), analyse=failing, image=image)
    print(f"abort: {load.ok} answered, {load.failed} failed {load.failures[:3]}")
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 20
    assert failing.calls == [10], str(failed.value)
    assert str(failed.value) == (
        "canary aborted, revision 1 still serves: analysis 'default' failed at 10 %: scripted fail at 10 %"
    )
    saved = read_state(settings.workdir)
    prod = saved["deployments"]["prod"]  # revision 1 again, in a new container on the port
    assert prod["revision"] == 1 and prod["image"] == v1["image"] and prod["model_version"] == v1["model_version"]
    assert prod["handle"] != v1["handle"]
    assert saved["canaries"]["prod"]["status"] == "aborted" and saved["rollouts"]["prod"]["failed_revision"] == 2
    assert httpx.get(prod["url"] + "/health/ready", timeout=5).json()["revision"] == 1
    only_one_container(second, prod)
