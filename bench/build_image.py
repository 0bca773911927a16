"""Image figures with real tools: cold build, model-only rebuild + push, image size over the base.

Starts Debian's docker-registry on 127.0.0.1 and uses buildah with a fresh overlay storage and a
fresh wheel cache in a temp dir (so the first build is cold: pip downloads, every layer builds), the debootstrap base image (its rootfs tarball cached in
~/.cache/mlops), and the demo iris model; then retrains with other hyper-parameters and rebuilds.
Needs root, buildah, podman, runc, docker-registry, debootstrap. Run: python bench/build_image.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MANIFESTS = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_registry(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (folder / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {folder / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(folder / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc, f"127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("docker-registry did not start")


def layer_sizes_mb(registry: str, repository: str, digest: str) -> list[float]:
    """Compressed layer sizes, as pushed; the first layer is the base image's."""
    manifest = httpx.get(f"http://{registry}/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFESTS}).json()
    return [layer["size"] / 1e6 for layer in manifest["layers"]]


def uncompressed_mb(image: str) -> float:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True, check=False
    ).stdout.strip()
    return float(out or 0) / 1e6


def timed(stages, settings) -> float:
    start = time.perf_counter()
    for stage in stages:
        stage.run(settings)
    return time.perf_counter() - start


def main() -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlops_cli import ui
    from mlops_cli.baseimage import build_base_image
    from mlops_cli.config import load_settings
    from mlops_cli.demo import train_and_register
    from mlops_cli.sources import parse_ref
    from mlops_cli.sources.local import LocalStore
    from mlops_cli.stages import assemble_server, build_image, validate_model
    from mlops_cli.state import State

    ui.set_quiet(True)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "containers.conf").write_text('[engine]\nruntime = "runc"\n')
        (tmp / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp / "graph"}"\nrunroot = "{tmp / "run"}"\n'
        )
        os.environ.update(
            CONTAINERS_CONF=str(tmp / "containers.conf"), CONTAINERS_STORAGE_CONF=str(tmp / "storage.conf")
        )
        registry_proc, registry = start_registry(tmp)
        try:
            flags = {
                "workdir": tmp / "work",
                "validation": {"allow_no_thresholds": True},  # the demo model: what is timed is the image
                "assemble": {"base_image": "localhost/mlops-python-base:bookworm"},
                "build": {
                    "builder": "buildah",
                    "registry": registry,
                    "insecure": True,
                    "storage_driver": "overlay",
                    "isolation": "chroot",
                    "wheel_cache": str(tmp / "wheels"),
                },
            }
            settings = load_settings(None, flags, environ={})
            build_base_image(settings, cache_dir=Path.home() / ".cache" / "mlops")
            first = settings.model_copy(update={"model": train_and_register(settings)})
            timed([validate_model, assemble_server], first)
            cold = timed([build_image], first)
            image = State.load(settings.workdir).image
            assert image is not None and first.model is not None  # build-image recorded it; set above
            data = load_iris()
            path = tmp / "iris-c01.joblib"
            joblib.dump(LogisticRegression(C=0.1, max_iter=1000).fit(data.data, data.target), path)
            store = LocalStore(settings.store_path)
            previous = store.metadata(parse_ref(first.model))
            assert previous.schema_ is not None  # registered with one by train_and_register
            meta = store.register(
                path,
                name="iris-demo",
                metrics=previous.metrics,
                tags=["validated"],
                schema=previous.schema_.model_dump(),
                labels=previous.labels,
            )
            second = settings.model_copy(update={"model": f"local:iris-demo@{meta.version}"})
            timed([validate_model, assemble_server], second)
            rebuild = timed([build_image], second)
            layers = layer_sizes_mb(registry, image.repository.split("/", 1)[1], image.digest)
            sizes = (uncompressed_mb(image.tag), uncompressed_mb("localhost/mlops-python-base:bookworm"))
        finally:
            registry_proc.terminate()
            registry_proc.wait(timeout=10)
    print(f"cold build + push:            {cold:6.1f} s")
    print(f"model-only rebuild + push:    {rebuild:6.1f} s   (target <= 15 s)")
    print(
        f"image over the base, pushed:  {sum(layers[1:]):6.1f} MB compressed "
        f"({len(layers) - 1} layers; base layer {layers[0]:.1f} MB)"
    )
    print(f"image over the base, on disk: {sizes[0] - sizes[1]:6.1f} MB   (target <= 120 MB; base {sizes[1]:.1f} MB)")


if __name__ == "__main__":
    main()
