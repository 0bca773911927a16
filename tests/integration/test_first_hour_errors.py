"""Errors on the way to one's own model (issue 12), against the real programs: pytest past its
timeout, pip without the wheel, a Docker Registry v2 that is down or refuses the password (checked
before any build), and a Docker-API socket that does not answer."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
from helpers import free_port, read_state, register_iris, require_module, require_tool

from mlops_cli.builders.registry_check import check_registry
from mlops_cli.errors import ConfigError, StageFailed, TemporaryError
from mlops_cli.settings import BuildSettings
from mlops_cli.stages import assemble_server, build_image, unit_tests, validate_model

pytestmark = pytest.mark.integration
THRESHOLDS = {"thresholds": {"accuracy": ">= 0.9"}}  # validate-model checks at least one metric


def test_unit_test_timeout_names_the_stage_and_the_setting(make_settings, tmp_path):
    (tmp_path / "proj" / "tests").mkdir(parents=True)
    (tmp_path / "proj" / "tests" / "test_slow.py").write_text("import time\n\ndef test_slow():\n    time.sleep(60)\n")
    s = make_settings(unit_test={"project_dir": tmp_path / "proj", "timeout_s": 3})
    start = time.monotonic()
    with pytest.raises(StageFailed) as info:
        unit_tests.run(s)
    assert time.monotonic() - start < 45
    message = str(info.value)
    assert message.startswith("unit-test: pytest did not finish within 3 s")
    assert "unit_test.timeout_s" in message and "MLOPS_UNIT_TEST__TIMEOUT_S" in message and "\n" not in message
    assert read_state(s.workdir)["stages"]["unit-test"]["status"] == "failed"


def test_pip_without_the_wheel_says_the_index_may_be_unreachable(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "requirements.txt").write_text("tinypkg==1.0\n")
    with pytest.raises(StageFailed) as info:
        build_image.prepare_context(bundle, tmp_path / "ctx", 120, None)
    message = str(info.value)
    assert "No matching distribution found for tinypkg==1.0" in message
    assert "package index may not be reachable" in message and "PIP_INDEX_URL" in message


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    """Debian's docker-registry (Docker Registry v2) on 127.0.0.1, behind htpasswd: user ci, password right-password."""
    require_tool("docker-registry")
    bcrypt = require_module("bcrypt", "htpasswd hashes for the registry")
    directory = tmp_path_factory.mktemp("registry")
    (directory / "htpasswd").write_text(f"ci:{bcrypt.hashpw(b'right-password', bcrypt.gensalt(rounds=5)).decode()}\n")
    port = free_port()
    (directory / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {directory / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: test\n    path: {directory / 'htpasswd'}\n"
    )
    with open(directory / "registry.log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(directory / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((directory / "registry.log").read_text()[-500:])
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_registry_probe_with_a_real_registry(auth_registry):
    base = {"registry": auth_registry + "/ml", "insecure": True, "retries": 0}
    assert check_registry(BuildSettings(**base, username="ci", password="right-password")) == "credentials accepted"
    assert check_registry(BuildSettings(**base)) == "needs the builder's login"  # maybe logged in with buildah login
    # plain HTTP without build.insecure: the docker builder's engine may list it as insecure; not ours to refuse
    assert check_registry(BuildSettings(registry=auth_registry, retries=0)) == "reachable (TLS not checked)"
    with pytest.raises(StageFailed) as info:
        check_registry(BuildSettings(**base, username="ci", password="wrong-password"))
    message = str(info.value)
    assert f"registry {auth_registry}/ml refused the credentials of user 'ci'" in message
    assert "MLOPS_BUILD__PASSWORD" in message and "wrong-password" not in message


class RecordingBuilder:
    """Stands in for buildah/docker: records whether the stage got as far as building."""

    def __init__(self):
        self.calls = []

    def build(self, request):
        self.calls.append("build")

    def push(self, tag):
        self.calls.append("push")
        return "sha256:" + "0" * 64

    def close(self):
        self.calls.append("close")


@pytest.mark.parametrize("case", ["down", "wrong password"])
def test_build_image_checks_the_registry_before_building(
    case, make_settings, settings, iris_artifact, monkeypatch, request
):
    registry = f"127.0.0.1:{free_port()}" if case == "down" else request.getfixturevalue("auth_registry")
    build = {"builder": "buildah", "registry": registry, "insecure": True, "retries": 1, "retry_backoff_s": 0.1}
    if case == "wrong password":
        build.update(username="ci", password="wrong-password")
    s = make_settings(
        workdir=settings.workdir, model=register_iris(settings, iris_artifact), validation=THRESHOLDS, build=build
    )
    validate_model.run(s)
    assemble_server.run(s)
    builder = RecordingBuilder()
    monkeypatch.setattr(build_image, "get_builder", lambda name, settings: builder)
    downloads = []
    monkeypatch.setattr(build_image, "prepare_context", lambda *a, **k: downloads.append(a))
    start = time.monotonic()
    expected = TemporaryError if case == "down" else StageFailed
    with pytest.raises(expected) as info:
        build_image.run(s)
    assert time.monotonic() - start < 30
    assert builder.calls == ["close"] and downloads == []  # nothing built, no wheel downloaded
    message = str(info.value)
    if case == "down":
        assert f"registry {registry} did not answer: " in message and "connection refused" in message
        assert "build.registry" in message and "(gave up after 2 attempts)" in message
    else:
        assert "refused the credentials" in message and "wrong-password" not in message
    state = read_state(s.workdir)
    assert state["image"] is None and state["stages"]["build-image"]["status"] == "failed"


def test_an_engine_that_does_not_answer_is_named_in_one_whole_line(make_settings, settings, iris_artifact):
    require_module("docker", "the docker builder's client")
    s = make_settings(
        workdir=settings.workdir,
        model=register_iris(settings, iris_artifact),
        validation=THRESHOLDS,
        build={
            "builder": "docker",
            "registry": "127.0.0.1:1",
            "docker_host": f"tcp://127.0.0.1:{free_port()}",
            "timeout_s": 5,
        },
    )
    validate_model.run(s)
    assemble_server.run(s)
    with pytest.raises(ConfigError) as info:
        build_image.run(s)
    message = str(info.value)
    assert message.startswith(f"no Docker-API engine answers at {s.build.docker_host}: ")
    assert "\n" not in message and message.endswith(
        "(start Docker or `podman system service`, or set build.docker_host)"
    )
    reason = message.split(": ", 1)[1]
    assert reason.count("(") == reason.count(")")  # not cut inside a parenthesis
