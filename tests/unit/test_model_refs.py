"""Model references, uniform across sources, and the hint for a missing optional client."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import run_cli

from mlops_cli.errors import UsageError
from mlops_cli.sources import ModelRef, parse_ref


@pytest.mark.parametrize(
    "text, scheme, name, version",
    [
        ("local:iris", "local", "iris", None),
        ("local:iris@3", "local", "iris", "3"),
        ("clearml:1c6cd92f18354e40b3a4002fdaf306db", "clearml", "1c6cd92f18354e40b3a4002fdaf306db", None),
        ("s3://models/iris/v1", "s3", "models/iris/v1", None),
        ("s3://my.models-bucket/a/b/c/", "s3", "my.models-bucket/a/b/c", None),
    ],
)
def test_each_form_parses_and_prints_back(text, scheme, name, version):
    ref = parse_ref(text)
    assert (ref.scheme, ref.name, ref.version) == (scheme, name, version)
    assert parse_ref(str(ref)) == ref


def test_only_local_references_get_pinned_to_a_version():
    assert str(parse_ref("local:iris").pinned("4")) == "local:iris@4"
    assert str(parse_ref("local:iris@2").pinned("4")) == "local:iris@2"
    assert str(parse_ref("clearml:abc").pinned("abc")) == "clearml:abc"
    assert str(parse_ref("s3://models/iris").pinned("7")) == "s3://models/iris"
    assert str(ModelRef("s3", "b/p")) == "s3://b/p"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("iris", "has no scheme"),
        ("gcs:iris", "unknown model source 'gcs'"),
        ("clearml:", "expected clearml:MODEL_ID"),
        ("clearml:abc@2", "expected clearml:MODEL_ID"),
        ("clearml:a/b", "expected clearml:MODEL_ID"),
        ("s3://models", "needs a key prefix"),
        ("s3://models/", "needs a key prefix"),
        ("s3://Models/iris", "not an S3 bucket name"),
        ("s3://models/a/../b", "needs a key prefix"),
        ("s3:models/iris", "expected s3://BUCKET/PREFIX"),
        ("local:iris@", "expected local:NAME[@VERSION]"),
    ],
)
def test_malformed_references_are_one_line_usage_errors(text, needle):
    with pytest.raises(UsageError, match=None) as info:
        parse_ref(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("ref", ["s3://models", "clearml:x@1", "s3:/models/x"])
def test_the_cli_refuses_a_malformed_reference_in_one_line(tmp_path, ref):
    done = run_cli("validate-model", "--model", ref, "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "package, ref, extra, env",
    [
        ("boto3", "s3://models/iris", "s3", {}),
        ("clearml", "clearml:abc", "clearml", {"MLOPS_CLEARML__API_HOST": "http://127.0.0.1:9"}),
    ],
)
def test_a_missing_client_library_names_the_pip_extra(tmp_path, package, ref, extra, env):
    code = (
        f"import sys; sys.modules[{package!r}] = None; from mlops_cli.cli import main; "
        f"sys.exit(main(['validate-model', '--model', {ref!r}, '--workdir', {str(tmp_path / 'w')!r}]))"
    )
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "CLEARML_"))}
    environ.update(env, HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and f"pip install 'mlops-pipeline-kit[{extra}]'" in errors[0]
        and "Traceback" not in done.stderr
    )


def test_the_source_modules_load_their_clients_only_when_used():
    code = (
        "import sys, mlops_cli.sources.clearml, mlops_cli.sources.s3, mlops_cli.audit, mlops_cli.holdout; "
        "print(','.join(m for m in ('clearml', 'boto3', 'botocore', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_the_generated_clearml_config_bounds_retries_and_carries_the_s3_endpoint(make_settings, tmp_path):
    from mlops_cli.sources.clearml_sdk import _config_text

    user = tmp_path / "clearml.conf"
    user.write_text('api { api_server: "http://x" }\n')
    settings = make_settings(
        clearml={"api_host": "http://127.0.0.1:1", "retries": 1, "access_key": "K", "secret_key": "S"},
        s3={
            "endpoint_url": "https://minio.example:9000",
            "access_key_id": "A",
            "secret_access_key": "B",
            "verify_tls": False,
        },
    )
    text = _config_text(settings, user)
    assert text.splitlines()[0] == f'include file("{user}")'  # the user's settings first, ours on top
    assert "api.http.retries { total: 1, connect: 1, read: 1, redirect: 1, status: 1" in text
    assert 'api.credentials.secret_key: "S"' in text
    entry = json.loads(text.split("sdk.aws.s3.credentials: [", 1)[1].rsplit("]", 1)[0])
    assert entry == {
        "host": "minio.example:9000",
        "secure": True,
        "multipart": False,
        "verify": False,
        "key": "A",
        "secret": "B",
    }
    aws = _config_text(make_settings(s3={"access_key_id": "A", "secret_access_key": "B", "region": "eu-west-1"}), None)
    assert 'sdk.aws.s3.key: "A"' in aws and 'sdk.aws.s3.region: "eu-west-1"' in aws and "include" not in aws
