"""The S3 source with real boto3 against a real SeaweedFS server; holdout data on S3."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import FEATURES, read_state
from sourcetools import BUCKET, SECRET_KEY, one_line_error, run_mlops, source_env, upload_s3_model

pytestmark = pytest.mark.integration


def iris_holdout_rows():
    from sklearn.datasets import load_iris

    data = load_iris()
    names = ["setosa", "versicolor", "virginica"]
    return [dict(zip(FEATURES, map(float, row)), species=names[t]) for row, t in zip(data.data[::3], data.target[::3])]


def test_pipeline_run_from_s3_with_a_parquet_holdout_on_s3(s3_server, tmp_path, iris_artifact):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ref = upload_s3_model(s3_server, tmp_path, iris_artifact)
    rows = iris_holdout_rows()
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    s3_server.client().put_object(Bucket=BUCKET, Key="holdout/iris.parquet", Body=buf.getvalue())
    work = tmp_path / "w"
    holdout = {
        "path": f"s3://{BUCKET}/holdout/iris.parquet",
        "target": "species",
        "thresholds": {"accuracy": ">= 0.9", "f1": ">= 0.9", "roc_auc": ">= 0.95"},
    }
    env = source_env(
        None,
        s3_server,
        work,
        MLOPS_VALIDATION__HOLDOUT=json.dumps(holdout),
        MLOPS_VALIDATION__THRESHOLDS='{"accuracy": ">= 0.9"}',
    )
    try:
        done = run_mlops("pipeline", "run", "--model", ref, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        state = read_state(work)
        assert state["validation"]["model_ref"] == ref and state["deployments"]["prod"]["model_ref"] == ref
        details = {c["name"]: c["detail"] for c in state["validation"]["checks"]}
        assert set(details) >= {"holdout accuracy", "holdout f1", "holdout roc_auc"}
        accuracy = float(details["holdout accuracy"].split("= ")[1].split(",")[0])
        assert 0.9 <= accuracy <= 1.0
        assert {a["env"] for a in state["audit"]} == {"test", "prod"}
        assert all(not a["written_back"] and "keeps no tags" in a["detail"] for a in state["audit"])
        assert SECRET_KEY not in (work / "state.json").read_text() + done.stdout + done.stderr
    finally:
        run_mlops("stop", env=env)


def test_wrong_secret_is_access_denied_without_showing_it(s3_server, tmp_path, iris_artifact):
    ref = upload_s3_model(s3_server, tmp_path, iris_artifact)
    env = source_env(None, s3_server, tmp_path / "w", MLOPS_S3__SECRET_ACCESS_KEY="wrong-secret-value")
    done = run_mlops("validate-model", "--model", ref, env=env)
    assert done.returncode == 2
    one_line_error(done, "access denied", ref, "SignatureDoesNotMatch")
    assert "wrong-secret-value" not in done.stderr + done.stdout


def test_a_user_without_rights_on_the_bucket_is_denied(s3_server, tmp_path, iris_artifact):
    ref = upload_s3_model(s3_server, tmp_path, iris_artifact)
    env = source_env(
        None,
        s3_server,
        tmp_path / "w",
        MLOPS_S3__ACCESS_KEY_ID="AKOUTSIDER",
        MLOPS_S3__SECRET_ACCESS_KEY="outsider-secret",
    )
    done = run_mlops("validate-model", "--model", ref, env=env)
    assert done.returncode == 2
    one_line_error(done, "access denied", "AccessDenied")


def test_missing_bucket(s3_server, tmp_path):
    done = run_mlops(
        "validate-model", "--model", "s3://no-such-bucket/iris/1", env=source_env(None, s3_server, tmp_path / "w")
    )
    assert done.returncode == 2
    one_line_error(done, "bucket 'no-such-bucket' does not exist", s3_server.endpoint)


def test_missing_metadata_key(s3_server, tmp_path, iris_artifact):
    ref = upload_s3_model(s3_server, tmp_path, iris_artifact, skip=("metadata",))
    done = run_mlops("validate-model", "--model", ref, env=source_env(None, s3_server, tmp_path / "w"))
    assert done.returncode == 2
    one_line_error(done, ref, "no metadata.json", "holds iris.joblib")


def test_missing_artifact_key(s3_server, tmp_path, iris_artifact):
    ref = upload_s3_model(s3_server, tmp_path, iris_artifact, skip=("artifact",))
    done = run_mlops("validate-model", "--model", ref, env=source_env(None, s3_server, tmp_path / "w"))
    assert done.returncode == 1
    one_line_error(done, ref, "has no file", "iris.joblib not found")


def test_digest_mismatch_after_download(s3_server, tmp_path, iris_artifact):
    ref = upload_s3_model(s3_server, tmp_path, iris_artifact, body=b"not the model that was registered")
    work = tmp_path / "w"
    done = run_mlops("validate-model", "--model", ref, env=source_env(None, s3_server, work))
    assert done.returncode == 1
    one_line_error(done, "corrupt or altered artifact")
    assert read_state(work)["validation"]["passed"] is False


def test_unreachable_s3_endpoint(s3_server, tmp_path):
    from helpers import free_port

    env = source_env(
        None, s3_server, tmp_path / "w", MLOPS_S3__ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", MLOPS_S3__RETRIES="0"
    )
    done = run_mlops("validate-model", "--model", "s3://models/iris/1", env=env, timeout=60)
    assert done.returncode == 75
    one_line_error(done, "unreachable")


def test_credentials_from_aws_variables_and_from_a_profile(s3_server, tmp_path, iris_artifact):
    ref = upload_s3_model(s3_server, tmp_path, iris_artifact)
    from sourcetools import ACCESS_KEY

    by_env = source_env(None, s3_server, tmp_path / "a", AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    del by_env["MLOPS_S3__ACCESS_KEY_ID"], by_env["MLOPS_S3__SECRET_ACCESS_KEY"]
    done = run_mlops("validate-model", "--model", ref, env=by_env)
    assert done.returncode == 0, done.stderr

    creds = tmp_path / "aws-credentials"
    creds.write_text(f"[models-reader]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    by_profile = dict(by_env, AWS_SHARED_CREDENTIALS_FILE=str(creds), MLOPS_S3__PROFILE="models-reader")
    del by_profile["AWS_ACCESS_KEY_ID"], by_profile["AWS_SECRET_ACCESS_KEY"]
    done = run_mlops("validate-model", "--model", ref, env=dict(by_profile, MLOPS_WORKDIR=str(tmp_path / "b")))
    assert done.returncode == 0, done.stderr

    missing = run_mlops("validate-model", "--model", ref, env=dict(by_profile, MLOPS_S3__PROFILE="nobody"))
    assert missing.returncode == 2
    one_line_error(missing, "AWS profile 'nobody' not found")


def test_preprocessing_scale_and_an_outlier_detector_from_the_source_reach_the_server(s3_server, tmp_path):
    """A model trained on standardized inputs, its scaler's parameters and an IsolationForest kept beside it on
    S3: validate-model checks the detector's digest, the bundle's spec carries both, the server answers as the
    model does on scaled inputs and counts the detector's outliers."""
    import hashlib
    import urllib.request

    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.ensemble import IsolationForest
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    scaler = StandardScaler().fit(data.data)
    model = LogisticRegression(max_iter=500).fit(scaler.transform(data.data), data.target)
    artifact, detector = tmp_path / "scaled.joblib", tmp_path / "detector.joblib"
    joblib.dump(model, artifact)
    joblib.dump(IsolationForest(random_state=0).fit(data.data), detector)  # on values as sent
    scale = {f: {"center": float(c), "scale": float(s)} for f, c, s in zip(FEATURES, scaler.mean_, scaler.scale_)}
    modules = {"preprocessing": {"scale": scale}, "outlier_detector": {"file": str(detector)}}
    ref = upload_s3_model(s3_server, tmp_path, artifact, modules=modules)
    prefix = ref.removeprefix(f"s3://{BUCKET}/")
    s3_server.client().put_object(Bucket=BUCKET, Key=f"{prefix}/detector.joblib", Body=detector.read_bytes())
    work = tmp_path / "w"
    env = source_env(None, s3_server, work)
    try:
        done = run_mlops("pipeline", "run", "--model", ref, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        state = read_state(work)
        checks = {c["name"]: c["detail"] for c in state["validation"]["checks"]}
        assert checks["module files"].startswith("detector.joblib sha256:")
        spec = json.loads((Path(state["bundle"]["path"]) / "spec.json").read_text())
        settings = {m["name"]: m["settings"] for m in spec["modules"]}
        assert settings["preprocessing"]["scale"]["petal_length_cm"]["center"] == pytest.approx(scaler.mean_[2])
        digest = hashlib.sha256(detector.read_bytes()).hexdigest()
        assert settings["outlier"] == {"detector": "modules/outlier/detector.joblib", "detector_sha256": digest}
        rows = data.data[::10]
        url = state["deployments"]["prod"]["url"]
        request = urllib.request.Request(
            f"{url}/v1/predict",
            method="POST",
            headers={"Content-Type": "application/json"},
            data=json.dumps({"instances": rows.tolist() + [[40, 40, 40, 40]]}).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answers = json.load(response)["predictions"]
        expected = [["setosa", "versicolor", "virginica"][i] for i in model.predict(scaler.transform(rows))]
        assert [a["label"] for a in answers[:-1]] == expected
        unscaled = [["setosa", "versicolor", "virginica"][i] for i in model.predict(np.asarray(rows))]
        assert unscaled != expected  # the scaling mattered
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            metrics = response.read().decode()
        line = [m for m in metrics.splitlines() if m.startswith('mlops_outlier_instances_total{reason="detector"}')]
        assert line and float(line[0].split()[-1]) >= 1, line
    finally:
        run_mlops("stop", env=env)


def test_an_altered_module_file_fails_validation(s3_server, tmp_path, iris_artifact):
    detector = tmp_path / "detector.joblib"
    detector.write_bytes(b"a detector")
    ref = upload_s3_model(s3_server, tmp_path, iris_artifact, modules={"outlier_detector": {"file": str(detector)}})
    s3_server.client().put_object(
        Bucket=BUCKET, Key=f"{ref.removeprefix(f's3://{BUCKET}/')}/detector.joblib", Body=b"another detector"
    )
    work = tmp_path / "w"
    done = run_mlops("validate-model", "--model", ref, env=source_env(None, s3_server, work))
    assert done.returncode == 1
    one_line_error(done, "module file detector.joblib has sha256:", "(corrupt or altered)")


def test_the_seaweedfs_fixture_retries_on_fresh_ports(tmp_path):
    """The S3 port it picked is taken before weed binds it: the start-up is tried again on other ports."""
    import socket

    from sourcetools import SeaweedS3

    server = SeaweedS3(tmp_path)
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen(1)
        try:
            server.start()
            assert server.port != taken
            assert BUCKET in [b["Name"] for b in server.client().list_buckets()["Buckets"]]
        finally:
            server.stop()
    assert server.proc.poll() is not None
