"""build-image: build the bundle into an image, push it, record the registry's digest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ..builders import BuildRequest, get_builder
from ..builders.registry_check import check_registry
from ..digests import sha256_file
from ..errors import ConfigError, StageFailed
from ..proc import run as run_program
from ..settings import Settings
from ..state import BundleRecord, ImageRecord, ModelRecord, State
from ..ui import progress
from .base import StageResult, stage


class BuildResult(StageResult):
    reference: str | None = None
    digest: str | None = None


def _git_commit(settings: Settings) -> str:
    if settings.build.git_commit:
        return settings.build.git_commit
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _download_wheels(requirements: Path, dest: Path, timeout: float) -> None:
    progress("downloading the wheels of requirements.txt (the image build itself needs no network)")
    done = run_program(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-r",
            str(requirements),
            "-d",
            str(dest),
        ],
        timeout=timeout,
        stream=True,
    )
    if done.returncode != 0:
        if "No matching distribution" in done.output or "Could not find a version" in done.output:
            raise StageFailed(
                f"pip could not download the wheels of requirements.txt: {done.tail(1)}",
                hint="no wheel of that version was found; if it exists, the package index may not be "
                "reachable from here: check the network, a proxy (HTTPS_PROXY), PIP_INDEX_URL or pip.conf",
            )
        raise StageFailed(f"pip could not download the wheels of requirements.txt: {done.tail(1)}")


def _cached_wheels(requirements: Path, cache_root: Path, timeout: float) -> Path:
    """The wheels of a pinned requirements.txt, downloaded once per distinct file.

    The cache entry is keyed by the file's sha256 and holds a manifest of every wheel's sha256;
    an entry whose wheels no longer match it (a disk error, a hand edit) is downloaded again.
    """
    entry = cache_root / sha256_file(requirements)
    manifest = entry / "manifest.json"
    if manifest.is_file():
        try:
            expected = json.loads(manifest.read_text(encoding="utf-8"))
            wheels = entry / "wheels"
            if (
                expected
                and all(sha256_file(wheels / name) == digest for name, digest in expected.items())
                and sorted(p.name for p in wheels.iterdir()) == sorted(expected)
            ):
                progress(f"reusing the wheels of this requirements.txt from {entry}")
                return wheels
        except (OSError, ValueError, AttributeError):
            pass
    cache_root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache_root))
    try:
        _download_wheels(requirements, partial / "wheels", timeout)
        digests = {p.name: sha256_file(p) for p in sorted((partial / "wheels").iterdir())}
        (partial / "manifest.json").write_text(json.dumps(digests, indent=1), encoding="utf-8")
        shutil.rmtree(entry, ignore_errors=True)
        partial.replace(entry)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return entry / "wheels"


def prepare_context(bundle: Path, context: Path, timeout: float, wheel_cache: Path | None = None) -> Path:
    """A copy of the bundle plus the wheels of its requirements, from the wheel cache when set."""
    if context.exists():
        shutil.rmtree(context)
    shutil.copytree(bundle, context)
    requirements = context / "requirements.txt"
    if wheel_cache is None:
        _download_wheels(requirements, context / "wheels", timeout)
    else:
        shutil.copytree(_cached_wheels(requirements, wheel_cache, timeout), context / "wheels")
    return context


def labels(model: ModelRecord, bundle: BundleRecord, settings: Settings) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": model.name,
        "org.opencontainers.image.version": model.version,
        "org.opencontainers.image.revision": _git_commit(settings),
        "org.opencontainers.image.created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "io.mlops.model.ref": model.ref,
        "io.mlops.model.sha256": model.sha256,
        "io.mlops.bundle.digest": bundle.bundle_digest,
    }


@stage("build-image")
def run(settings: Settings) -> BuildResult:
    state = State.load(settings.workdir)
    bundle = state.require_bundle()
    cfg = settings.build
    if not cfg.builder:
        return BuildResult(stage="build-image", status="skipped", message="skipped: no image builder configured")
    builder = get_builder(cfg.builder, settings)  # an unknown or missing builder is named first
    try:
        if not cfg.registry:
            raise ConfigError(
                "build.registry is not set",
                hint="set build.registry or MLOPS_BUILD__REGISTRY, e.g. artifactory.example.com/ml",
            )
        model, _ = state.require_validated()  # (require_bundle checked it already)
        repository = f"{cfg.registry.rstrip('/')}/{cfg.repository or model.name}".lower()
        tag = f"{repository}:{model.version}-{bundle.bundle_digest[:12]}"
        check_registry(cfg)  # a wrong address or password fails now, not after the build
        context = prepare_context(
            Path(bundle.path), settings.workdir.resolve() / "build" / "context", cfg.timeout_s, cfg.wheel_cache_dir()
        )
        progress(f"building {tag} with {cfg.builder}")
        builder.build(BuildRequest(context=context, tag=tag, labels=labels(model, bundle, settings)))
        progress(f"pushing {tag}")
        digest = builder.push(tag)
    finally:
        builder.close()
    if not digest.startswith("sha256:"):
        raise StageFailed(f"the registry returned no digest for {tag} (got {digest!r})")
    state.image = ImageRecord(
        reference=f"{repository}@{digest}",
        repository=repository,
        tag=tag,
        digest=digest,
        builder=cfg.builder,
        bundle_digest=bundle.bundle_digest,
    )
    state.smoke = None
    state.save(settings.workdir)
    return BuildResult(
        stage="build-image", reference=state.image.reference, digest=digest, message=f"pushed {state.image.reference}"
    )
