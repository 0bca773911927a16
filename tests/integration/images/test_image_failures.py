"""Every way building, pushing and running an image fails: one clear line, state unchanged."""

from __future__ import annotations

import pytest
from helpers import free_port, read_state, register_iris
from imagetools import podman

from mlops_cli.errors import ConfigError, StageFailed, TemporaryError
from mlops_cli.stages import assemble_server, build_image, deploy_to_test_env, validate_model

pytestmark = pytest.mark.integration

# Slow to load, except where `fast` exists: on this host, where validate-model's trial run loads it (a file of
# the test's tmp_path, absent in the container).
SLOW_MODEL = (
    "import os, time\n\nclass Slow:\n    def __init__(self):\n        if not os.path.exists(%r):\n"
    "            time.sleep(120)\n\n    def predict(self, X):\n        return ['a'] * len(X)\n"
)


def assembled(make_settings, settings, artifact, base_image, build=None, **register):
    build_cfg = {
        "builder": "buildah",
        "registry": "127.0.0.1:1",
        "insecure": True,
        "storage_driver": "overlay",
        "isolation": "chroot",
        "retries": 1,
        "retry_backoff_s": 0.1,
        **(build or {}),
    }
    s = make_settings(
        workdir=settings.workdir,
        model=register_iris(settings, artifact, **register),
        build=build_cfg,
        assemble={"base_image": base_image},
        deploy={**settings.deploy.model_dump(mode="json"), "target": "container", "ready_timeout_s": 8},
    )
    validate_model.run(s)
    assemble_server.run(s)
    return s


def test_unreachable_registry_fails_after_bounded_retries(
    make_settings, settings, iris_artifact, base_image, container_env
):
    s = assembled(make_settings, settings, iris_artifact, base_image, build={"registry": f"127.0.0.1:{free_port()}"})
    with pytest.raises(TemporaryError, match=r"did not answer: .*connection refused.* \(gave up after 2 attempts\)"):
        build_image.run(s)
    state = read_state(s.workdir)
    assert state["image"] is None and state["stages"]["build-image"]["status"] == "failed"


def test_wrong_credentials_name_the_registry_not_the_secret(
    make_settings, settings, iris_artifact, base_image, auth_registry
):
    s = assembled(
        make_settings,
        settings,
        iris_artifact,
        base_image,
        build={"registry": auth_registry, "username": "ci", "password": "wrong-password"},
    )
    with pytest.raises(StageFailed) as info:
        build_image.run(s)
    message = str(info.value)
    assert f"registry {auth_registry} refused the credentials" in message and "wrong-password" not in message
    assert read_state(s.workdir)["image"] is None
    ok = make_settings(workdir=s.workdir, build={**s.build.model_dump(mode="json"), "password": "right-password"})
    assert build_image.run(ok).digest.startswith("sha256:")  # the same registry takes the right password
    assert "right-password" not in (s.workdir / "state.json").read_text()


def test_missing_builder_binary_and_socket(make_settings, settings, iris_artifact, base_image, monkeypatch):
    s = assembled(make_settings, settings, iris_artifact, base_image)
    with monkeypatch.context() as m:
        m.setenv("PATH", "/nonexistent")
        with pytest.raises(ConfigError, match="buildah is not installed or not on PATH .*apt-get install buildah"):
            build_image.run(s)
    docker = make_settings(
        workdir=s.workdir,
        build={
            **s.build.model_dump(mode="json"),
            "builder": "docker",
            "docker_host": "unix:///nonexistent/podman.sock",
        },
    )
    with pytest.raises(ConfigError, match="no Docker-API engine answers at unix:///nonexistent/podman.sock"):
        build_image.run(docker)


def test_failing_build_shows_the_end_of_its_log(make_settings, settings, iris_artifact, registry):
    # a registry that answers (build-image checks it before building), and a base image that does not exist
    s = assembled(make_settings, settings, iris_artifact, "localhost/no-such-base:1", build={"registry": registry})
    with pytest.raises(
        StageFailed, match=r"buildah (bud|pull)\b.* failed .*last lines of its log:\n(.|\n)*no-such-base"
    ):
        build_image.run(s)
    assert read_state(s.workdir)["image"] is None


def test_image_that_never_gets_ready_is_removed_with_its_logs(
    make_settings, settings, base_image, registry, tmp_path, capsys
):
    model, fast = tmp_path / "slow.py", tmp_path / "fast-on-this-host"
    model.write_text(SLOW_MODEL % str(fast))
    fast.touch()
    schema = {"inputs": [{"name": "x", "type": "number"}], "outputs": [{"name": "label", "type": "string"}]}
    s = assembled(
        make_settings,
        settings,
        model,
        base_image,
        build={"registry": registry},
        name="slow",
        framework="python",
        class_name="Slow",
        labels=None,
        schema=schema,
        examples=[{"instances": [[1.0]]}],
        reference=None,
    )
    build_image.run(s)
    with pytest.raises(StageFailed, match=r"did not become ready within 8 s .*it was removed"):
        deploy_to_test_env.run(s)
    assert "container log |" in capsys.readouterr().err
    left = podman("ps", "--all", "--filter", f"label=io.mlops.workdir={s.workdir.resolve()}", "--format", "{{.Names}}")
    assert left.stdout.strip() == ""
    assert read_state(s.workdir)["deployments"] == {}
