"""The seven stages on one machine with real server processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest
from helpers import free_port, read_state, register_iris, run_cli

from mlops_cli import run_all
from mlops_cli.stages import STAGES
from mlops_cli.targets.local import _alive

pytestmark = pytest.mark.integration


def state_message(workdir: Path, stage: str) -> str:
    return read_state(workdir)["stages"][stage]["message"]


def test_pipeline_runs_every_stage_and_serves(make_settings, settings, iris_artifact, monkeypatch):
    for name in ("AWS_SECRET_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "MLOPS_BUILD__PASSWORD", "SLACK_BOT_TOKEN"):
        monkeypatch.setenv(name, "s3cr3t-value")  # the toolkit's credentials: never handed to a server
    ref = register_iris(settings, iris_artifact)
    run_settings = make_settings(
        workdir=settings.workdir,
        model=ref,
        deploy=settings.deploy.model_dump(mode="json"),
        validation={"thresholds": {"accuracy": ">= 0.9"}},
    )
    result = run_all.run(run_settings)
    assert result.passed, result.error
    statuses = {row.stage: row.status for row in result.stages}
    assert list(statuses) == list(STAGES)
    # no project tests (unit-test skipped, the reason recorded), no builder (build-image skipped)
    assert statuses == {**{s: "passed" for s in STAGES}, "unit-test": "skipped", "build-image": "skipped"}
    assert "skipped: no image builder configured" in "\n".join(result.lines())
    assert "the model project has no tests" in state_message(settings.workdir, "unit-test")

    state = read_state(settings.workdir)
    prod = state["deployments"]["prod"]
    assert prod["url"] == f"http://127.0.0.1:{settings.deploy.prod.port}"
    answer = httpx.post(prod["url"] + "/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    assert answer.status_code == 200
    assert [p["label"] for p in answer.json()["predictions"]] == ["setosa", "virginica"]
    assert state["smoke"]["passed"] and state["smoke"]["requests"] == 20
    server_env = Path(f"/proc/{prod['pid']}/environ").read_bytes()
    assert b"s3cr3t-value" not in server_env and b"PATH=" in server_env
    assert state["validation"]["model_sha256"] == prod["model_sha256"]
    assert (settings.workdir / "reports" / "unit-test.xml").is_file()
    assert all(state["stages"][s]["duration_s"] >= 0 for s in STAGES)


def test_an_onnx_model_travels_every_stage(make_settings, settings, iris_artifact, tmp_path):
    """The iris pipeline exported with skl2onnx: registered by its .onnx suffix, served by onnxruntime."""
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    import joblib
    from skl2onnx.common.data_types import FloatTensorType

    graph = skl2onnx.convert_sklearn(joblib.load(iris_artifact), initial_types=[("X", FloatTensorType([None, 4]))])
    artifact = tmp_path / "iris.onnx"
    artifact.write_bytes(graph.SerializeToString())
    ref = register_iris(settings, artifact, framework=None)
    result = run_all.run(
        make_settings(workdir=settings.workdir, model=ref, deploy=settings.deploy.model_dump(mode="json"))
    )
    assert result.passed, result.error
    state = read_state(settings.workdir)
    bundle = Path(state["bundle"]["path"])
    assert json.loads((bundle / "spec.json").read_text())["model"]["framework"] == "onnx"
    requirements = (bundle / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "scikit-learn" not in requirements
    answer = httpx.post(
        state["deployments"]["prod"]["url"] + "/v1/predict",
        json={"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
    )
    assert [p["label"] for p in answer.json()["predictions"]] == ["setosa", "virginica"]


def test_pipeline_stops_at_the_first_failure(make_settings, settings, iris_artifact):
    ref = register_iris(settings, iris_artifact, metrics={"accuracy": 0.5})
    run_settings = make_settings(workdir=settings.workdir, model=ref, validation={"thresholds": {"accuracy": ">= 0.9"}})
    result = run_all.run(run_settings)
    assert not result.passed and result.failed_stage == "validate-model" and result.exit_code == 1
    statuses = [row.status for row in result.stages]
    assert statuses == ["skipped", "failed", "not run", "not run", "not run", "not run", "not run"]
    assert "deployments" not in read_state(settings.workdir) or not read_state(settings.workdir)["deployments"]


def test_demo_from_the_cli_answers_its_curl_line_and_stops(tmp_path):
    work = tmp_path / "demo"  # given relative, as in the README
    env = {"MLOPS_DEPLOY__TEST__PORT": str(free_port()), "MLOPS_DEPLOY__PROD__PORT": str(free_port())}
    try:
        demo = run_cli("demo", "--workdir", "demo", env=env, cwd=tmp_path, timeout=600)
        assert demo.returncode == 0, demo.stderr
        curl_line = next(line.strip() for line in demo.stdout.splitlines() if line.strip().startswith("curl "))
        answered = subprocess.run(shlex.split(curl_line), capture_output=True, text=True, timeout=30)
        assert json.loads(answered.stdout)["predictions"][0]["label"] == "setosa"
        status = run_cli("status", "--workdir", str(work), "--json")
        assert json.loads(status.stdout)["running"] == {"test": True, "prod": True}
        pids = [d["pid"] for d in read_state(work)["deployments"].values()]
    finally:
        stopped = run_cli("stop", "--workdir", str(work))
    assert stopped.returncode == 0 and "stopped prod" in stopped.stdout
    assert not any(_alive(pid) for pid in pids)
    assert run_cli("stop", "--workdir", str(work)).stdout.strip() == "nothing deployed"


def test_each_stage_as_its_own_process_like_jenkins(tmp_path, iris_artifact):
    from mlops_cli.config import load_settings

    work = tmp_path / "w"
    env = {
        "MLOPS_WORKDIR": str(work),
        "MLOPS_DEPLOY__TEST__PORT": str(free_port()),
        "MLOPS_DEPLOY__PROD__PORT": str(free_port()),
        "MLOPS_VALIDATION__THRESHOLDS": '{"accuracy": ">= 0.9"}',
    }
    ref = register_iris(load_settings(None, {"workdir": work}, environ={}), iris_artifact)
    env["MLOPS_MODEL"] = ref
    try:
        for stage in STAGES:
            done = run_cli(stage, env=env)
            assert done.returncode == 0, f"{stage}: {done.stderr}"
        assert {k: v["status"] for k, v in read_state(work)["stages"].items()} == {
            **{s: "passed" for s in STAGES},
            "unit-test": "skipped",
            "build-image": "skipped",
        }
    finally:
        run_cli("stop", env=env)
    assert os.path.exists(work / "state.json")
