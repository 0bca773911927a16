"""Registry credentials only over TLS with the buildah builder: registries.conf cannot turn TLS off for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_cli.builders import buildah
from mlops_cli.config import load_settings
from mlops_cli.proc import Completed


@pytest.fixture
def pushes(monkeypatch) -> list[list[str]]:
    """The argv of each `buildah push` (buildah itself is not run: no registry can be reached from a unit test)."""
    seen: list[list[str]] = []

    def run(argv: list[str], **kwargs) -> Completed:
        seen.append(list(argv))
        Path(argv[argv.index("--digestfile") + 1]).write_text("sha256:" + "a" * 64)
        return Completed(argv=argv, returncode=0, output="")

    monkeypatch.setattr(buildah, "run", run)
    monkeypatch.setattr(buildah.shutil, "which", lambda name: "/usr/bin/buildah")
    return seen


@pytest.mark.parametrize(
    "registry, credentials, expected",
    [
        ("art.example.com:5000/ml", True, ["--tls-verify=true"]),  # registries.conf may say insecure: forced off
        ("127.0.0.1:5000", True, []),  # loopback: registries.conf decides
        ("art.example.com:5000/ml", False, []),  # no credentials to protect
    ],
)
def test_buildah_pushes_credentials_to_a_remote_registry_only_with_tls_verified(
    pushes, monkeypatch, registry, credentials, expected
):
    environ = {"MLOPS_BUILD__USERNAME": "ci", "MLOPS_BUILD__PASSWORD": "pa55"} if credentials else {}
    settings = load_settings(None, {"build": {"builder": "buildah", "registry": registry}}, environ=environ)
    digest = buildah.BuildahBuilder(settings).push(f"{registry}/iris:1")
    assert digest == "sha256:" + "a" * 64
    [argv] = pushes
    assert [a for a in argv if a.startswith("--tls-verify")] == expected
    assert ("--authfile" in argv) == credentials and "pa55" not in " ".join(argv)


def test_buildah_with_build_insecure_and_a_loopback_registry_skips_tls(pushes) -> None:
    settings = load_settings(
        None,
        {"build": {"builder": "buildah", "registry": "localhost:5000", "insecure": True, "username": "ci"}},
        environ={"MLOPS_BUILD__PASSWORD": "pa55"},
    )
    buildah.BuildahBuilder(settings).push("localhost:5000/iris:1")
    assert [a for a in pushes[0] if a.startswith("--tls-verify")] == ["--tls-verify=false"]
