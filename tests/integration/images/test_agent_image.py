"""The Jenkins agent image (deploy/jenkins/agent/Containerfile) builds with buildah FROM the toolkit's Debian
base image (the image tests' shared fixture) and runs mlops, buildah and the JRE of Jenkins' agent."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from helpers import REPO
from imagetools import podman

pytestmark = pytest.mark.integration

AGENT_IMAGE = "localhost/mlops-jenkins-agent:test"


def test_the_agent_image_builds_and_runs_mlops(base_image, tmp_path):
    from mlops_cli import __version__

    # the build context as deploy/jenkins/agent/Containerfile describes it: the agent's files and the wheels
    context = tmp_path / "agent"
    shutil.copytree(REPO / "deploy" / "jenkins" / "agent", context)
    wheels = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(context / "wheels"),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert wheels.returncode == 0, wheels.stderr[-3000:]
    build = subprocess.run(
        [
            "buildah",
            "--storage-driver",
            "overlay",
            "bud",
            "--layers",
            "--isolation",
            "chroot",
            "-f",
            str(context / "Containerfile"),
            "--build-arg",
            f"BASE={base_image}",
            "--build-arg",
            "MLOPS_EXTRAS=",
            "-t",
            AGENT_IMAGE,
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    version = podman("run", "--rm", AGENT_IMAGE, "mlops", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"mlops, version {__version__}"
    tools = podman(
        "run",
        "--rm",
        AGENT_IMAGE,
        "sh",
        "-c",
        "buildah --version && java -version 2>&1 && id -u && echo $MLOPS_BUILD__ISOLATION $MLOPS_BUILD__STORAGE_DRIVER",
    )
    assert tools.returncode == 0, tools.stderr
    lines = tools.stdout.splitlines()
    assert lines[0].startswith("buildah version") and any('version "17' in line for line in lines)
    assert lines[-2:] == ["1000", "chroot vfs"]
    # without the variables the Kubernetes plugin sets, the agent launcher says what is missing, in one line
    agent = podman("run", "--rm", AGENT_IMAGE)
    assert agent.returncode != 0 and "JENKINS_URL is not set" in agent.stderr
