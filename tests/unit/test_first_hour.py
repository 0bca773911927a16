"""The first hour of a new user (issue 12): help that names settings and exit codes, `mlops model
list|show`, JSON for every error under --json, file-system and encoding problems with their documented
exit codes, status pointing at the workdir that has state, and hints that name the fix."""

from __future__ import annotations

import json
import os

import click
import pytest
from helpers import IRIS_SCHEMA, read_state, run_cli

from mlops_cli.builders.docker import engine_reason
from mlops_cli.cli import READS, cli
from mlops_cli.config import load_settings
from mlops_cli.settings import Settings
from mlops_cli.state import State


def all_commands(group: click.Group, prefix=""):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + name + " ")
        else:
            yield prefix + name, command


def test_top_level_help_names_exit_codes_and_the_variable_rule():
    helped = run_cli("--help")
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    for code in (
        "0 ok",
        "1 a check failed",
        "2 bad usage",
        "3 a stage ran",
        "74 a file-system",
        "75 temporary",
        "70 internal error",
        "130 interrupted",
    ):
        assert code in text, code
    assert "MLOPS_SECTION__KEY" in text and "build.registry -> MLOPS_BUILD__REGISTRY" in text
    assert "docs/configuration.md" in text


@pytest.mark.parametrize("command", [("validate-model",), ("pipeline", "run")])
def test_model_help_shows_every_reference_form(command):
    text = " ".join(run_cli(*command, "--help").stdout.split())
    for form in ("local:NAME[@VERSION]", "clearml:MODEL_ID", "s3://BUCKET/PREFIX", "MLOPS_MODEL"):
        assert form in text, form


def test_every_command_help_names_the_settings_it_reads():
    seen = set()
    for name, command in all_commands(cli):
        leaf = name.split()[-1]
        assert leaf in READS, f"{name}: add the settings sections it reads to cli.READS"
        for section in READS[leaf]:
            assert section in Settings.model_fields, f"{name}: {section} is not a settings section"
        help_text = " ".join(command.get_help(click.Context(command, info_name=name)).split())
        assert "Settings:" in help_text and "MLOPS_WORKDIR" in help_text, name
        for section in READS[leaf]:
            variable = "MLOPS_MODEL" if section == "model" else f"MLOPS_{section.upper()}__*"
            assert f"{section} ({variable})" in help_text, (name, section)
        seen.add(leaf)
    assert set(READS) == seen, f"READS names commands that do not exist: {set(READS) - seen}"


@pytest.mark.parametrize(
    "args",
    [
        ("--json", "validate-model", "--no-such-option"),
        ("rollback", "--json"),
        ("--json", "no-such-command"),
        ("--json", "model"),
        ("model", "register", "--json", "x.joblib", "--name", "a", "--metrics", "nonumber"),
    ],
)
def test_usage_errors_print_json_with_json(args, tmp_path):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    answer = json.loads(result.stdout)
    assert answer["exit_code"] == 2 and answer["error"] and "\n" not in answer["error"]
    assert "Traceback" not in result.stderr


def test_usage_error_without_json_prints_no_json(tmp_path):
    result = run_cli("rollback", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and "--env" in result.stderr


def _one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if not line.startswith("  · ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_workdir_that_cannot_be_written_is_a_file_system_error_74(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run_cli("--json", "unit-test", "--workdir", str(tmp_path / "afile" / "work"))
    assert result.returncode == 74, result.stderr
    line = _one_error_line(result)
    assert "internal error" not in line and "Not a directory" in line and "MLOPS_WORKDIR" in line
    assert json.loads(result.stdout)["exit_code"] == 74


def test_a_read_only_workdir_is_74_not_internal_error(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions; the kernel's sysfs refuses even root
        workdir = "/sys/mlops-read-only-test"
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o500)
        workdir = str(parent / "work")
    result = run_cli("validate-model", "--model", "local:iris", "--workdir", workdir)
    assert result.returncode == 74, result.stderr
    line = _one_error_line(result)
    assert "internal error" not in line and workdir in line


def test_a_config_file_not_in_utf8_is_a_config_error_2(tmp_path):
    (tmp_path / "mlops.yaml").write_bytes("deploy:\n  target: l\xf6cal\n".encode("latin-1"))
    result = run_cli("unit-test", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result)
    assert "mlops.yaml is not UTF-8 text (byte 19)" in line and "save it as UTF-8" in line


def test_pipeline_run_without_a_model_fails_before_unit_test(tmp_path):
    result = run_cli("pipeline", "run", "--workdir", str(tmp_path / "w"), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    line = _one_error_line(result)
    assert "no model given" in line and "--model" in line and "MLOPS_MODEL" in line
    assert not (tmp_path / "w" / "reports").exists()  # unit-test never ran
    assert not (tmp_path / "w" / "state.json").exists() or "unit-test" not in read_state(tmp_path / "w")["stages"]


def test_a_missing_validator_tag_says_how_to_add_it(tmp_path, iris_artifact):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(IRIS_SCHEMA))
    work = str(tmp_path / "w")
    registered = run_cli(
        "model",
        "register",
        str(iris_artifact),
        "--name",
        "mine",
        "--metrics",
        "accuracy=0.97",
        "--schema",
        str(schema),
        "--workdir",
        work,
    )
    assert registered.returncode == 0, registered.stderr
    result = run_cli(
        "validate-model",
        "--model",
        "local:mine",
        "--workdir",
        work,
        env={"MLOPS_VALIDATION__THRESHOLDS": '{"accuracy": ">= 0.9"}'},
    )
    assert result.returncode == 1
    line = _one_error_line(result)
    assert "tag 'validated' missing" in line
    assert "--tag validated" in line and "validation.validator_tag" in line


def test_model_list_and_show(tmp_path, iris_artifact):
    work = str(tmp_path / "w")
    empty = run_cli("model", "list", "--workdir", work)
    assert (
        empty.returncode == 0 and "no models in the local store" in empty.stdout and "--tag validated" in empty.stdout
    )
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(IRIS_SCHEMA))
    for accuracy in ("0.91", "0.95"):
        assert (
            run_cli(
                "model",
                "register",
                str(iris_artifact),
                "--name",
                "mine",
                "--metrics",
                f"accuracy={accuracy}",
                "--tag",
                "validated",
                "--schema",
                str(schema),
                "--workdir",
                work,
            ).returncode
            == 0
        )
    listed = run_cli("--json", "model", "list", "--workdir", work)
    models = json.loads(listed.stdout)["models"]
    assert [m["ref"] for m in models] == ["local:mine@1", "local:mine@2"]
    assert models[1]["metrics"] == {"accuracy": 0.95} and models[1]["tags"] == ["validated"]
    assert "local:mine@2" in run_cli("model", "list", "--workdir", work).stdout
    shown = run_cli("model", "show", "local:mine", "--workdir", work)  # no version: the newest
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("local:mine@2: sklearn classification model")
    assert "metrics: accuracy=0.95" in shown.stdout and "inputs: sepal_length_cm:number" in shown.stdout
    as_json = json.loads(run_cli("--json", "model", "show", "local:mine@1", "--workdir", work).stdout)
    assert as_json["ref"] == "local:mine@1" and as_json["metadata"]["metrics"] == {"accuracy": 0.91}
    missing = run_cli("model", "show", "local:nope", "--workdir", work)
    assert missing.returncode == 2 and "models: mine" in _one_error_line(missing)
    bad = run_cli("model", "show", "s3://x/y", "--workdir", work)
    assert bad.returncode == 2 and "S3 bucket name" in _one_error_line(bad)
    none = run_cli("model", "show", "--workdir", work)
    assert none.returncode == 2 and "clearml:MODEL_ID" in _one_error_line(none)


def test_status_says_where_it_looked_and_which_workdir_has_state(tmp_path):
    State().save(tmp_path / "my demo")  # as the demo leaves it, in a workdir with a space
    result = run_cli("status", cwd=tmp_path)
    assert result.returncode == 0
    hint = next(line for line in result.stdout.splitlines() if line.startswith("HINT"))
    assert f"no state in {tmp_path / '.mlops' / 'state.json'}" in hint
    assert "try `mlops status --workdir 'my demo'`" in hint
    answer = json.loads(run_cli("--json", "status", cwd=tmp_path).stdout)
    assert answer["looked_in"] == str(tmp_path / ".mlops" / "state.json") and "'my demo'" in answer["hint"]
    first = run_cli("status", "--workdir", "my demo", cwd=tmp_path).stdout.splitlines()[0]
    assert first == f"workdir my demo (read {tmp_path / 'my demo' / 'state.json'})"
    found = json.loads(run_cli("--json", "status", "--workdir", "my demo", cwd=tmp_path).stdout)
    assert found["hint"] is None and found["looked_in"] == str(tmp_path / "my demo" / "state.json")
    alone = tmp_path / "alone"
    alone.mkdir()
    lonely = run_cli("status", cwd=alone)
    assert "nothing has run with this workdir" in lonely.stdout


def test_the_engine_error_is_never_cut_mid_sentence():
    short = "Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file'))"
    assert engine_reason(Exception(short + "\nsecond line")) == short
    long = "Error while fetching server API version: " + "; ".join(
        f"clause number {i} of the reason" for i in range(40)
    )
    cut = engine_reason(Exception(long))
    assert cut.endswith(" [...]") and len(cut) <= 410
    assert long.startswith(cut.removesuffix(" [...]")) and cut.removesuffix(" [...]").endswith("of the reason")


def test_settings_load_reports_non_utf8_as_config_error(tmp_path):
    from mlops_cli.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_bytes(b"workdir: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path, environ={})


def test_only_file_system_errors_are_74_a_refused_connection_stays_internal(monkeypatch, tmp_path, capsys):
    import errno

    from mlops_cli import models
    from mlops_cli.cli import main

    monkeypatch.setattr(
        models,
        "list_models",
        lambda settings: (_ for _ in ()).throw(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")),
    )
    assert main(["model", "list", "--workdir", str(tmp_path)]) == 70
    assert "internal error: ConnectionRefusedError" in capsys.readouterr().err
    monkeypatch.setattr(
        models, "list_models", lambda settings: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
    )
    assert main(["model", "list", "--workdir", str(tmp_path)]) == 74
    assert "No space left on device (check the permissions and free space" in capsys.readouterr().err
