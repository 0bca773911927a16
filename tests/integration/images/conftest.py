"""Real container tooling, started by fixtures: a Docker Registry v2 on 127.0.0.1, buildah and
podman on their own storage (overlay, cached between runs under ~/.cache/mlops-tests), runc, and a
Python base image made with debootstrap (no Docker Hub)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from helpers import free_port, require_tool
from imagetools import BASE_IMAGE, CACHE


@pytest.fixture(scope="session")
def container_env(tmp_path_factory):
    """containers.conf (runc, limits this machine permits), storage.conf (overlay) for buildah and podman."""
    for tool in ("buildah", "podman", "runc", "debootstrap", "docker-registry"):
        require_tool(tool)
    conf = tmp_path_factory.mktemp("containers")
    (conf / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n'
    )
    # podman's database in the graphroot pins the runroot it was first created with, whatever storage.conf says
    # later. The old graphroot (storage-overlay) pinned a runroot in a pytest temp dir, which any later pytest
    # session may delete while containers run: podman's restart of a killed container then failed ("cannot
    # chown run directory"). A graphroot of its own, with its runroot next to it for good.
    (conf / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{CACHE / "storage"}"\nrunroot = "{CACHE / "run"}"\n'
    )
    (conf / "registries.conf").write_text("unqualified-search-registries = []\n")
    env = {
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        pinned = subprocess.run(
            ["podman", "info", "--format", "{{.Store.RunRoot}}"], capture_output=True, text=True, timeout=120
        )
        if pinned.stdout.strip() != str(CACHE / "run"):
            pytest.fail(
                f"podman's storage at {CACHE / 'storage'} uses runroot {pinned.stdout.strip()!r}, not "
                f"{CACHE / 'run'}: remove that storage (podman system reset) and run again; {pinned.stderr}"
            )
        yield conf


def allow_insecure(conf: Path, registry: str) -> None:
    """Tell podman (its run and its Docker-API service) that this registry on 127.0.0.1 is plain HTTP."""
    with open(conf / "registries.conf", "a") as fh:
        fh.write(f'\n[[registry]]\nlocation = "{registry}"\ninsecure = true\n')


def _start_registry(directory: Path, extra: str = "") -> tuple[subprocess.Popen, str]:
    port = free_port()
    (directory / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {directory / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{extra}"
    )
    with open(directory / "registry.log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(directory / "config.yml")], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code in (200, 401):
                return proc, f"127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"docker-registry did not start: {(directory / 'registry.log').read_text()[-500:]}")


@pytest.fixture(scope="session")
def registry(container_env, tmp_path_factory):
    """Debian's docker-registry with filesystem storage in a temp dir, plain HTTP on 127.0.0.1."""
    proc, address = _start_registry(tmp_path_factory.mktemp("registry"))
    allow_insecure(container_env, address)
    yield address
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def auth_registry(container_env, tmp_path_factory):
    """The same registry behind htpasswd auth: user `ci`, password `right-password`."""
    import bcrypt

    directory = tmp_path_factory.mktemp("auth-registry")
    hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=5)).decode()
    (directory / "htpasswd").write_text(f"ci:{hashed}\n")
    proc, address = _start_registry(
        directory, f"auth:\n  htpasswd:\n    realm: test\n    path: {directory / 'htpasswd'}\n"
    )
    allow_insecure(container_env, address)
    yield address
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def base_image(container_env, tmp_path_factory):
    """The debootstrap base image (cached: the rootfs tarball and the image survive test runs)."""
    from mlops_cli.baseimage import build_base_image
    from mlops_cli.config import load_settings

    settings = load_settings(None, {"workdir": tmp_path_factory.mktemp("base")}, environ={})
    build_base_image(settings, name=BASE_IMAGE, cache_dir=CACHE)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def podman_socket(container_env, registry, tmp_path_factory):
    """podman's Docker-compatible API on a unix socket in a temp dir, for the docker builder."""
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not sock.exists():
        proc.kill()
        raise RuntimeError("podman system service did not create its socket")
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(timeout=20)
