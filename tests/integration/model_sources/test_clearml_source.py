"""The ClearML source through the real clearml SDK, against the ClearML API test double, with the
model files on a real SeaweedFS S3 server; the pipeline end to end and each bad input."""

from __future__ import annotations

import json
import time

import pytest
from helpers import free_port, read_state, require_module
from sourcetools import BUCKET, CLEARML_KEY, CLEARML_SECRET, add_clearml_model, one_line_error, run_mlops, source_env

pytestmark = pytest.mark.integration


def test_pipeline_run_from_clearml_tags_the_model_and_records_the_audit(
    clearml_api, s3_server, tmp_path, iris_artifact
):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, metrics_on_task={"accuracy": 0.97})
    # deployed from another workdir, or left tagged by a write-back that failed: not in this workdir's state
    elsewhere = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact)
    elsewhere.tags = ["deployed:test", "deployed:prod", "mlops:validated"]
    work = tmp_path / "w"
    env = source_env(
        None,
        s3_server,
        work,
        MLOPS_VALIDATION__THRESHOLDS='{"accuracy": ">= 0.9"}',
        MLOPS_CLEARML__API_HOST=clearml_api.host,
        MLOPS_CLEARML__ACCESS_KEY=CLEARML_KEY,
        MLOPS_CLEARML__SECRET_KEY=CLEARML_SECRET,
    )
    try:
        done = run_mlops("pipeline", "run", "--model", f"clearml:{model.id}", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        state = read_state(work)
        for dep in state["deployments"].values():  # mlops put no ClearML key or config in the servers' environment
            with open(f"/proc/{dep['pid']}/environ", "rb") as fh:
                environ = [v for v in fh.read().split(b"\0") if v]
            names = [v.partition(b"=")[0] for v in environ]
            assert b"MLOPS_CLEARML__SECRET_KEY" in [k.encode() for k in env]  # there was a secret to leak
            assert not [n for n in names if b"SECRET" in n.upper()], names
            assert b"CLEARML_CONFIG_FILE" not in names and b"CLEARML_API_ACCESS_KEY" not in names
            assert not [v for v in environ if b"clearml-secret-for-tests" in v or b"s3-secret-for-tests" in v]
        assert {k: v["status"] for k, v in state["stages"].items()}["rolling-update"] == "passed"
        assert state["validation"]["model_ref"] == f"clearml:{model.id}"
        # the metric came from the parent task's single values, not from the model's metadata
        assert any(c["detail"] == "accuracy = 0.97, needs >= 0.9" for c in state["validation"]["checks"])
        # verdict and deployments written back to the model through the SDK (models.edit, add_or_update_metadata)
        assert {"mlops:validated", "deployed:test", "deployed:prod"} <= set(model.tags)
        assert elsewhere.tags == ["mlops:validated"]  # found by models.get_all tags=[...], the tags taken off
        assert "mlops.deployed.prod.until" in elsewhere.metadata
        meta = model.metadata
        assert meta["mlops.validation.verdict"]["value"] == "passed"
        assert meta["mlops.deployed.test.digest"]["value"].startswith("bundle sha256:")
        assert meta["mlops.deployed.prod.model_sha256"]["value"] == state["model"]["sha256"]
        assert meta["mlops.deployed.prod.at"]["value"][:4].isdigit()
        audit = {a["env"]: a for a in state["audit"]}
        assert audit["test"]["written_back"] and audit["prod"]["tag"] == "deployed:prod"
        assert audit["prod"]["digest"] == meta["mlops.deployed.prod.digest"]["value"]
        status = run_mlops("status", env=env)
        assert f"audit      prod: clearml:{model.id} tag deployed:prod, bundle sha256:" in status.stdout
        # nothing secret in state or output
        text = (work / "state.json").read_text() + done.stdout + done.stderr + status.stdout
        assert "clearml-secret-for-tests" not in text and "s3-secret-for-tests" not in text
        assert clearml_api.unknown == []
        for endpoint in (
            "auth.login",
            "models.get_by_id",
            "tasks.get_by_id",
            "events.get_task_single_value_metrics",
            "events.scalar_metrics_iter_histogram",
            "models.edit",
            "models.add_or_update_metadata",
        ):
            assert endpoint in clearml_api.calls, endpoint

        # a second model rolled out to prod takes the deployed:prod tag from the first
        second = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, metrics_on_task={"accuracy": 0.98})
        again = run_mlops("pipeline", "run", "--model", f"clearml:{second.id}", env=env)
        assert again.returncode == 0, again.stderr
        assert "deployed:prod" in second.tags and "deployed:prod" not in model.tags
        assert "mlops.deployed.prod.until" in model.metadata
    finally:
        run_mlops("stop", env=env)


def test_a_failed_validation_is_tagged_rejected(clearml_api, s3_server, tmp_path, iris_artifact):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, metrics_on_task={"accuracy": 0.5})
    env = source_env(clearml_api, s3_server, tmp_path / "w", MLOPS_VALIDATION__THRESHOLDS='{"accuracy": ">= 0.9"}')
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=env)
    assert done.returncode == 1
    one_line_error(done, "accuracy = 0.5, needs >= 0.9")
    assert "mlops:rejected" in model.tags and model.metadata["mlops.validation.verdict"]["value"] == "failed"


def test_unknown_model_id_names_the_id_and_the_server(clearml_api, s3_server, tmp_path):
    done = run_mlops(
        "validate-model",
        "--model",
        "clearml:0123456789abcdef0123456789abcdef",
        env=source_env(clearml_api, s3_server, tmp_path / "w"),
    )
    assert done.returncode == 2
    one_line_error(done, "0123456789abcdef0123456789abcdef", clearml_api.host, "not found")
    assert done.stdout == ""  # the SDK's own log (to stdout) is kept quiet


def test_a_model_with_no_file(clearml_api, s3_server, tmp_path, iris_artifact):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, uri="")
    done = run_mlops(
        "validate-model", "--model", f"clearml:{model.id}", env=source_env(clearml_api, s3_server, tmp_path / "w")
    )
    assert done.returncode == 1
    one_line_error(done, model.id, "has no file")


def test_a_model_whose_file_is_gone_from_s3(clearml_api, s3_server, tmp_path, iris_artifact):
    uri = f"s3://{s3_server.endpoint.removeprefix('http://')}/{BUCKET}/nowhere/iris.joblib"
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, uri=uri)
    done = run_mlops(
        "validate-model", "--model", f"clearml:{model.id}", env=source_env(clearml_api, s3_server, tmp_path / "w")
    )
    assert done.returncode == 1
    one_line_error(done, model.id, "could not be downloaded", uri)


def test_digest_mismatch_after_download(clearml_api, s3_server, tmp_path, iris_artifact):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, body=iris_artifact.read_bytes() + b"x")
    work = tmp_path / "w"
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=source_env(clearml_api, s3_server, work))
    assert done.returncode == 1
    one_line_error(done, "corrupt or altered artifact")
    assert read_state(work)["validation"]["passed"] is False


def test_a_model_without_sha256_in_its_metadata(clearml_api, s3_server, tmp_path, iris_artifact):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, drop=("sha256",))
    done = run_mlops(
        "validate-model", "--model", f"clearml:{model.id}", env=source_env(clearml_api, s3_server, tmp_path / "w")
    )
    assert done.returncode == 1
    one_line_error(done, "no sha256")


def test_metric_named_in_a_threshold_but_missing_from_the_task(clearml_api, s3_server, tmp_path, iris_artifact):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, metrics_on_task={"accuracy": 0.97})
    env = source_env(clearml_api, s3_server, tmp_path / "w", MLOPS_VALIDATION__THRESHOLDS='{"f1": ">= 0.9"}')
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=env)
    assert done.returncode == 1
    one_line_error(done, "f1 is not reported by the model's task or metadata", "reported: accuracy")


def test_unreachable_clearml_fails_within_ten_seconds(s3_server, tmp_path):
    require_module("clearml")
    closed = free_port()
    env = source_env(
        None,
        s3_server,
        tmp_path / "w",
        CLEARML_API_HOST=f"http://127.0.0.1:{closed}",
        CLEARML_API_ACCESS_KEY="k",
        CLEARML_API_SECRET_KEY="s",
    )
    started = time.monotonic()
    done = run_mlops("validate-model", "--model", "clearml:abc123", env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 75, done.stderr
    one_line_error(done, f"127.0.0.1:{closed}", "unreachable")
    assert elapsed <= 10, elapsed


def test_wrong_clearml_credentials(clearml_api, s3_server, tmp_path):
    env = source_env(clearml_api, s3_server, tmp_path / "w", CLEARML_API_SECRET_KEY="not-the-secret")
    done = run_mlops("validate-model", "--model", "clearml:abc123", env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    one_line_error(done, "refused the credentials")
    assert "not-the-secret" not in done.stderr


def test_no_clearml_server_configured(s3_server, tmp_path):
    done = run_mlops("validate-model", "--model", "clearml:abc123", env=source_env(None, s3_server, tmp_path / "w"))
    assert done.returncode == 2
    one_line_error(done, "no ClearML server configured")


def test_json_output_stays_clean(clearml_api, s3_server, tmp_path, iris_artifact):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact)
    done = run_mlops(
        "validate-model",
        "--json",
        "--model",
        f"clearml:{model.id}",
        env=source_env(clearml_api, s3_server, tmp_path / "w"),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model_ref"] == f"clearml:{model.id}" and result["written_back"]


def test_schema_examples_and_reference_from_the_task_artifacts(clearml_api, s3_server, tmp_path, iris_artifact):
    from sourcetools import iris_metadata

    meta = iris_metadata(tmp_path, iris_artifact)
    host = s3_server.endpoint.removeprefix("http://")
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, drop=("schema", "examples", "reference"))
    task = clearml_api.tasks[model.task]
    for name in ("schema", "examples", "reference"):
        key = f"artifacts/{task.id}/{name}.json"
        s3_server.client().put_object(Bucket=BUCKET, Key=key, Body=json.dumps(meta[name]).encode())
        task.artifacts[name] = f"s3://{host}/{BUCKET}/{key}"
    work = tmp_path / "w"
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=source_env(clearml_api, s3_server, work))
    assert done.returncode == 0, done.stderr
    assert read_state(work)["model"]["schema"] == meta["schema"]
    assembled = run_mlops("assemble-server", env=source_env(clearml_api, s3_server, work))
    assert assembled.returncode == 0, assembled.stderr
    bundle = read_state(work)["bundle"]["path"]
    with open(f"{bundle}/examples.json") as fh:
        assert json.load(fh) == meta["examples"]
    with open(f"{bundle}/reference.json") as fh:
        assert json.load(fh) == meta["reference"]


def test_a_server_that_accepts_but_never_answers_fails_in_time(s3_server, tmp_path):
    import socket

    require_module("clearml")
    with socket.socket() as hung:  # listens, so connecting works; never reads nor answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        host = f"http://127.0.0.1:{hung.getsockname()[1]}"
        env = source_env(
            None,
            s3_server,
            tmp_path / "w",
            MLOPS_CLEARML__API_HOST=host,
            MLOPS_CLEARML__ACCESS_KEY="k",
            MLOPS_CLEARML__SECRET_KEY="s",
            MLOPS_CLEARML__TIMEOUT_S="4",
        )
        started = time.monotonic()
        done = run_mlops("validate-model", "--model", "clearml:abc123", env=env, timeout=60)
        elapsed = time.monotonic() - started
    assert done.returncode == 75
    one_line_error(done, host, "unreachable", "ReadTimeout")
    assert elapsed <= 10, elapsed


def test_the_sdk_retries_are_bounded_by_the_generated_config(s3_server, tmp_path):
    """A server that answers 503 to auth.login: the SDK's default would retry 240 times with backoff."""
    from doubles.clearml_api import ClearMLApiDouble

    failing = ClearMLApiDouble(CLEARML_KEY, CLEARML_SECRET)
    failing.unavailable.add("auth.login")
    failing.start(free_port())
    try:
        env = source_env(
            None,
            s3_server,
            tmp_path / "w",
            MLOPS_CLEARML__API_HOST=failing.host,
            MLOPS_CLEARML__ACCESS_KEY=CLEARML_KEY,
            MLOPS_CLEARML__SECRET_KEY=CLEARML_SECRET,
        )
        started = time.monotonic()
        done = run_mlops("validate-model", "--model", "clearml:abc123", env=env, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        failing.stop()
    assert done.returncode == 75, done.stderr
    one_line_error(done, failing.host, "unreachable or failing", "gave up after 2 retries")
    assert failing.calls.count("auth.login") == 3  # the first try and clearml.retries (2) more
    assert elapsed <= 10, elapsed


def test_host_and_keys_from_the_users_clearml_conf(clearml_api, s3_server, tmp_path, iris_artifact):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact)
    conf = tmp_path / "clearml.conf"
    conf.write_text(
        f'api {{\n  api_server: "{clearml_api.host}"\n'
        f'  credentials {{ access_key: "{CLEARML_KEY}", secret_key: "{CLEARML_SECRET}" }}\n'
        "  http.retries { total: 240 }\n}\n"
    )
    env = source_env(None, s3_server, tmp_path / "w", CLEARML_CONFIG_FILE=str(conf))
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=env)
    assert done.returncode == 0, done.stderr
    assert "mlops:validated" in model.tags
    broken = tmp_path / "broken.conf"
    broken.write_text("api { api_server: \n")
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=dict(env, CLEARML_CONFIG_FILE=str(broken)))
    assert done.returncode == 2
    one_line_error(done, "cannot read", "broken.conf")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's own use of pyparsing
def test_write_back_can_take_the_last_tag_off(
    clearml_api, s3_server, tmp_path, iris_artifact, make_settings, monkeypatch
):
    """In this process: the source's write-back as the audit uses it (models.edit, add_or_update_metadata)."""
    import os

    from mlops_cli.sources import clearml_sdk, get_source, parse_ref

    monkeypatch.setattr(os, "environ", dict(os.environ))  # what the source sets for the SDK stays in this test
    monkeypatch.setattr(clearml_sdk, "_prepared", {})  # and so does the process's one ClearML server

    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact)
    model.tags = ["deployed:prod"]
    settings = make_settings(
        clearml={"api_host": clearml_api.host, "access_key": CLEARML_KEY, "secret_key": CLEARML_SECRET},
        s3=s3_server.settings(),
    )
    source = get_source("clearml", settings)
    ref = parse_ref(f"clearml:{model.id}")
    assert source.write_back(
        ref, add_tags=[], remove_tags=["deployed:prod"], metadata={"mlops.deployed.prod.until": "t"}
    )
    assert model.tags == []
    assert model.metadata["mlops.deployed.prod.until"] == {"value": "t", "type": "str"}
    assert source.write_back(ref, add_tags=["a", "b"], remove_tags=[], metadata={})
    assert model.tags == ["a", "b"]


@pytest.mark.parametrize("stalled", ["auth.login", "events.get_task_single_value_metrics"])
def test_a_server_that_answers_ping_then_stalls_fails_within_the_timeout(s3_server, tmp_path, iris_artifact, stalled):
    """debug.ping answers, a later call never does: each SDK call is bounded by clearml.timeout_s (the SDK's own
    timeouts are 10 s, then 300 s, times the retries, and its send loop retries a failing server forever)."""
    from doubles.clearml_api import ClearMLApiDouble

    require_module("clearml")
    hanging = ClearMLApiDouble(CLEARML_KEY, CLEARML_SECRET)
    hanging.stalled.add(stalled)
    hanging.start(free_port())
    model = add_clearml_model(hanging, s3_server, tmp_path, iris_artifact)
    try:
        env = source_env(
            None,
            s3_server,
            tmp_path / "w",
            MLOPS_CLEARML__API_HOST=hanging.host,
            MLOPS_CLEARML__ACCESS_KEY=CLEARML_KEY,
            MLOPS_CLEARML__SECRET_KEY=CLEARML_SECRET,
            MLOPS_CLEARML__TIMEOUT_S="3",
        )
        started = time.monotonic()
        done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=env, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        hanging.stop()
    assert done.returncode == 75, done.stderr
    line = one_line_error(done, hanging.host)
    # the SDK's per-attempt timeouts (set from timeout_s) or the deadline around the call, whichever ends it
    assert "did not answer within 3 s" in line or "Read timed out" in line, line
    assert "debug.ping" in hanging.calls and stalled in hanging.calls
    assert elapsed <= 3 + 7, elapsed  # the timeout plus the start of a Python process with the SDK


@pytest.mark.parametrize("name", ["a/b", "../x"])
def test_a_model_name_that_would_reach_a_path_is_refused(clearml_api, s3_server, tmp_path, iris_artifact, name):
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact)
    model.name = name
    work = tmp_path / "w"
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=source_env(clearml_api, s3_server, work))
    assert done.returncode == 1, done.stderr
    one_line_error(done, model.id, f"model name {name!r} cannot name a bundle or an image")
    assert not (work / "bundles").exists() and read_state(work)["validation"]["passed"] is False


def test_metadata_metrics_do_not_override_the_tasks(clearml_api, s3_server, tmp_path, iris_artifact):
    env = source_env(clearml_api, s3_server, tmp_path / "w", MLOPS_VALIDATION__THRESHOLDS='{"accuracy": ">= 0.9"}')
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, metrics_on_task={"accuracy": 0.5})
    model.metadata["metrics.accuracy"] = 0.99  # a claim on the model that its task contradicts
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=env)
    assert done.returncode == 1
    one_line_error(done, "metric accuracy is 0.5 on its task but 0.99 in the model's metadata")
    agreeing = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact, metrics_on_task={"accuracy": 0.97})
    agreeing.metadata.update({"metrics.accuracy": 0.97, "metrics.f1": 0.95})  # agrees; adds what the task lacks
    done = run_mlops(
        "validate-model",
        "--model",
        f"clearml:{agreeing.id}",
        env=dict(env, MLOPS_VALIDATION__THRESHOLDS='{"accuracy": ">= 0.9", "f1": ">= 0.9"}'),
    )
    assert done.returncode == 0, done.stderr


def test_a_clearml_config_file_variable_naming_no_file(clearml_api, s3_server, tmp_path):
    env = source_env(clearml_api, s3_server, tmp_path / "w", CLEARML_CONFIG_FILE=str(tmp_path / "missing.conf"))
    done = run_mlops("validate-model", "--model", "clearml:abc123", env=env)
    assert done.returncode == 2
    one_line_error(done, "CLEARML_CONFIG_FILE", "missing.conf", "not a file")


def test_module_files_from_the_tasks_artifacts_and_uris(clearml_api, s3_server, tmp_path, iris_artifact):
    """`modules` in the model's metadata: the detector is an artifact of its task, the user module a URI."""
    import hashlib
    import io

    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import IsolationForest

    host = s3_server.endpoint.removeprefix("http://")
    buffer = io.BytesIO()  # real ones: validate-model's trial run loads them as the server will
    joblib.dump(IsolationForest(n_estimators=10, random_state=0).fit(load_iris().data), buffer)
    detector = buffer.getvalue()
    user = (
        b"class Tag:\n    def __init__(self, ctx, settings):\n        pass\n"
        b"    async def load(self):\n        pass\n    async def process(self, batch):\n        return batch\n"
    )
    model = add_clearml_model(clearml_api, s3_server, tmp_path, iris_artifact)
    task = clearml_api.tasks[model.task]
    for key, body in ((f"artifacts/{task.id}/detector.joblib", detector), (f"modules/{task.id}/enrich.py", user)):
        s3_server.client().put_object(Bucket=BUCKET, Key=key, Body=body)
    task.artifacts["detector.joblib"] = f"s3://{host}/{BUCKET}/artifacts/{task.id}/detector.joblib"
    model.metadata["modules"] = {
        "preprocessing": {"scale": {"petal_length_cm": {"center": 3.7, "scale": 1.7}}},
        "outlier_detector": {"file": "detector.joblib", "sha256": hashlib.sha256(detector).hexdigest()},
        "user_modules": [
            {
                "file": f"s3://{host}/{BUCKET}/modules/{task.id}/enrich.py",
                "class": "mods.enrich.Tag",
                "sha256": hashlib.sha256(user).hexdigest(),
            }
        ],
    }
    work = tmp_path / "w"
    env = source_env(clearml_api, s3_server, work)
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=env)
    assert done.returncode == 0, done.stderr
    assert "module files" in {c["name"] for c in read_state(work)["validation"]["checks"]}
    done = run_mlops("assemble-server", env=env)
    assert done.returncode == 0, done.stderr
    bundle = read_state(work)["bundle"]["path"]
    with open(f"{bundle}/spec.json") as fh:
        spec = {m["name"]: m["settings"] for m in json.load(fh)["modules"]}
    assert spec["preprocessing"] == {"scale": {"petal_length_cm": {"center": 3.7, "scale": 1.7}}}
    assert spec["outlier"]["detector"] == "modules/outlier/detector.joblib" and "mods.enrich.Tag" in spec
    with open(f"{bundle}/mods/enrich.py", "rb") as fh:
        assert fh.read() == user

    model.metadata["modules"]["outlier_detector"]["sha256"] = "0" * 64  # the metadata no longer matches the file
    done = run_mlops("validate-model", "--model", f"clearml:{model.id}", env=env)
    assert done.returncode == 1
    one_line_error(done, "module file detector.joblib has sha256:", "but metadata says sha256:000000000000")
