import json

import click
import pytest
from helpers import IRIS_SCHEMA, read_state, run_cli

from mlops_cli import __version__
from mlops_cli.cli import cli


def all_commands(group: click.Group, prefix=""):
    for name, command in group.commands.items():
        yield prefix + name, command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + name + " ")


def test_every_option_of_every_command_is_described():
    names = []
    for name, command in all_commands(cli):
        names.append(name)
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"
    for stage in (
        "unit-test",
        "validate-model",
        "assemble-server",
        "build-image",
        "deploy-test",
        "smoke-test",
        "rolling-update",
        "pipeline run",
        "model register",
        "status",
        "stop",
        "demo",
    ):
        assert stage in names


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"mlops, version {__version__}"
    helped = run_cli("validate-model", "--help")
    assert helped.returncode == 0 and "--allow-breaking" in helped.stdout and "--workdir" in helped.stdout


def one_line_error(result, code):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("  · ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_unknown_model_reference(tmp_path):
    line = one_line_error(run_cli("validate-model", "--model", "local:nope", "--workdir", str(tmp_path)), 2)
    assert "model local:nope not found" in line and "mlops model register" in line
    assert read_state(tmp_path)["stages"]["validate-model"]["status"] == "failed"  # state still valid


def test_malformed_config_file(tmp_path):
    (tmp_path / "mlops.yaml").write_text("deploy:\n  test: {port: [\n")
    line = one_line_error(run_cli("smoke-test", "--workdir", str(tmp_path / "w"), cwd=tmp_path), 2)
    assert "mlops.yaml: malformed YAML" in line
    # status and stop still work (an operator needs them most then), and say what is wrong
    for command in ("status", "stop"):
        result = run_cli(command, "--workdir", str(tmp_path / "w"), cwd=tmp_path)
        assert result.returncode == 0 and "mlops.yaml: malformed YAML" in result.stdout
        assert "using the default settings" in result.stdout


def test_unknown_config_key(tmp_path):
    (tmp_path / "c.yaml").write_text("smoke:\n  p99_ms: 3\n")
    line = one_line_error(run_cli("--config", str(tmp_path / "c.yaml"), "smoke-test"), 2)
    assert f"{tmp_path / 'c.yaml'}: unknown key 'smoke.p99_ms'" in line


def test_stage_before_the_stage_it_needs(tmp_path):
    line = one_line_error(run_cli("deploy-test", "--workdir", str(tmp_path)), 3)
    assert "run `mlops validate-model --model REF` first" in line
    assert read_state(tmp_path)["stages"]["deploy-test"]["status"] == "failed"


def test_json_error_goes_to_stdout_too(tmp_path):
    result = run_cli("smoke-test", "--json", "--workdir", str(tmp_path))
    assert result.returncode == 3
    assert json.loads(result.stdout)["exit_code"] == 3


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "deploy-test", "--workdir", str(tmp_path))
    assert result.returncode == 3 and "Traceback" in result.stderr


def test_register_then_validate_through_the_cli(tmp_path, iris_artifact):
    schema = tmp_path / "schema.yaml"
    schema.write_text(json.dumps(IRIS_SCHEMA))
    examples = tmp_path / "examples.json"
    examples.write_text(json.dumps([[5.1, 3.5, 1.4, 0.2]]))
    reference = tmp_path / "train.csv"
    reference.write_text(
        "sepal_length_cm,sepal_width_cm,petal_length_cm,petal_width_cm\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
    )
    work = str(tmp_path / "w")
    reg = run_cli(
        "model",
        "register",
        str(iris_artifact),
        "--name",
        "iris",
        "--metrics",
        "accuracy=0.97",
        "--tag",
        "validated",
        "--schema",
        str(schema),
        "--examples",
        str(examples),
        "--reference",
        str(reference),
        "--labels",
        "setosa,versicolor,virginica",
        "--workdir",
        work,
        "--json",
    )
    assert reg.returncode == 0, reg.stderr
    meta = json.loads(reg.stdout)
    assert (meta["version"], meta["metrics"], meta["labels"][2]) == ("1", {"accuracy": 0.97}, "virginica")
    assert meta["reference"]["features"]["petal_width_cm"]["max"] == 2.3
    assert meta["examples"] == [{"instances": [[5.1, 3.5, 1.4, 0.2]]}]
    val = run_cli(
        "validate-model",
        "--model",
        "local:iris@1",
        "--workdir",
        work,
        "--json",
        env={"MLOPS_VALIDATION__THRESHOLDS": '{"accuracy": ">= 0.99"}'},
    )
    assert val.returncode == 1 and "accuracy = 0.97, needs >= 0.99" in val.stderr
    val = run_cli(
        "validate-model",
        "--model",
        "local:iris@1",
        "--workdir",
        work,
        "--json",
        env={"MLOPS_VALIDATION__THRESHOLDS": '{"accuracy": ">= 0.9"}'},
    )
    assert val.returncode == 0 and json.loads(val.stdout)["model_ref"] == "local:iris@1"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "accuracy"], "is not NAME=NUMBER"),
        (["--metrics", "accuracy=high"], "is not NAME=NUMBER"),
    ],
)
def test_register_bad_metrics(tmp_path, iris_artifact, args, message):
    result = run_cli("model", "register", str(iris_artifact), "--name", "x", *args, "--workdir", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "cannot read reference file"),
        ("ragged.csv", "a,b\n1,2\n3,4,5\n", "line 3: 3 cells, header has 2"),
        ("latin1.csv", "a,b\n1,\xe9\n".encode("latin-1"), "is not a readable CSV"),
    ],
)
def test_register_bad_reference_files(tmp_path, iris_artifact, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    result = run_cli(
        "model",
        "register",
        str(iris_artifact),
        "--name",
        "x",
        "--reference",
        str(path),
        "--workdir",
        str(tmp_path / "w"),
    )
    assert message in one_line_error(result, 2)


def test_register_non_utf8_schema(tmp_path, iris_artifact):
    (tmp_path / "s.yaml").write_bytes(b"inputs: \xff\xfe\n")
    result = run_cli(
        "model",
        "register",
        str(iris_artifact),
        "--name",
        "x",
        "--schema",
        str(tmp_path / "s.yaml"),
        "--workdir",
        str(tmp_path / "w"),
    )
    assert "is not UTF-8 text" in one_line_error(result, 2)


def test_failed_pipeline_with_json_prints_one_document(tmp_path, iris_artifact):
    work = str(tmp_path / "w")
    assert run_cli("model", "register", str(iris_artifact), "--name", "iris", "--workdir", work).returncode == 0
    result = run_cli(
        "pipeline",
        "run",
        "--model",
        "local:iris@1",
        "--workdir",
        work,
        "--json",
        env={"MLOPS_UNIT_TEST__PATHS": '["nope"]'},
    )
    assert result.returncode == 2
    document = json.loads(result.stdout)  # exactly one JSON document
    assert document["failed_stage"] == "unit-test" and document["stages"][1]["status"] == "not run"
