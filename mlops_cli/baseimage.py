"""`mlops base-image`: a Python base image made from Debian packages, without Docker Hub.

For tests and air-gapped users: debootstrap a minimal Debian with python3 and python3-venv,
strip caches and docs, and commit it as a local image with buildah. The root file system is
kept as a tarball, so a second call (or a lost image) costs seconds, not a debootstrap.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError, StageFailed
from .proc import run
from .settings import Settings
from .ui import progress

DEFAULT_NAME = "localhost/mlops-python-base:bookworm"
PACKAGES = "python3,python3-venv,ca-certificates"
STRIP = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")


class BaseImageResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    image_id: str
    cached: bool

    def lines(self) -> list[str]:
        return [f"{self.name} ({self.image_id[:12]}){' already there' if self.cached else ' built'}"]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"{name} is not installed or not on PATH", hint=f"apt-get install {name}")
    return path


def _rootfs_tarball(suite: str, cache_dir: Path, mirror: str | None) -> Path:
    tarball = cache_dir / f"{suite}-python-rootfs.tar"
    if tarball.is_file():
        return tarball
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"debootstrap {suite} with {PACKAGES} (about a minute)")
        argv = [_tool("debootstrap"), "--variant=minbase", f"--include={PACKAGES}", suite, str(rootfs)]
        done = run(argv + ([mirror] if mirror else []), timeout=1800)
        if done.returncode != 0:
            raise StageFailed(f"debootstrap failed (exit code {done.returncode}): {done.tail(1)}")
        for part in STRIP:
            shutil.rmtree(rootfs / part, ignore_errors=True)
        partial = Path(tmp) / "rootfs.tar"
        done = run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=600)
        if done.returncode != 0:
            raise StageFailed(f"tar failed: {done.tail(1)}")
        partial.replace(tarball)
    return tarball


def build_base_image(
    settings: Settings,
    name: str = DEFAULT_NAME,
    suite: str = "bookworm",
    mirror: str | None = None,
    cache_dir: Path | None = None,
) -> BaseImageResult:
    buildah = [_tool("buildah")] + (
        ["--storage-driver", settings.build.storage_driver] if settings.build.storage_driver else []
    )
    found = run(buildah + ["inspect", "--type", "image", "--format", "{{.FromImageID}}", name], timeout=60)
    if found.returncode == 0 and found.output.strip():
        return BaseImageResult(name=name, image_id=found.output.strip(), cached=True)
    tarball = _rootfs_tarball(suite, cache_dir or Path.home() / ".cache" / "mlops", mirror)
    progress(f"committing {tarball.name} as {name}")
    made = run(buildah + ["from", "scratch"], timeout=60)
    if made.returncode != 0:
        raise StageFailed(f"buildah from scratch failed: {made.tail(1)}")
    container = made.output.strip().splitlines()[-1]
    try:
        for step in (
            ["add", container, str(tarball), "/"],
            [
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "python3",
                container,
            ],
            ["commit", "--quiet", container, name],
        ):
            done = run(buildah + step, timeout=600)
            if done.returncode != 0:
                raise StageFailed(f"buildah {step[0]} failed: {done.tail(1)}")
        image_id = done.output.strip().splitlines()[-1]
    finally:
        run(buildah + ["rm", container], timeout=60)
    return BaseImageResult(name=name, image_id=image_id, cached=False)
