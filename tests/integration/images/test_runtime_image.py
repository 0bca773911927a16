"""buildah's runtime image (mlops_cli/builders/runtime_image.py), with real buildah and podman: reused only
while it is what its key says; a change of requirements or of the base image, or a tag moved onto another
image, builds it again; the image built on it holds exactly the runtime's layers plus the model's."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from imagetools import podman

from mlops_cli.builders import BuildRequest
from mlops_cli.builders import runtime_image as rt
from mlops_cli.builders.buildah import BuildahBuilder

pytestmark = pytest.mark.integration

DOCKERFILE = """\
FROM {base} AS deps
COPY requirements.txt /deps/requirements.txt

FROM {base} AS runtime
USER 1001
COPY --from=deps /deps /deps

FROM scratch AS app
COPY model.txt /app/model.txt

FROM runtime
COPY --from=app --chown=1001:0 /app/ /app/
"""


def buildah(*args: str) -> str:
    done = subprocess.run(
        ["buildah", "--storage-driver", "overlay", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def inspect(reference: str) -> dict:
    return json.loads(buildah("inspect", "--type", "image", reference))


@pytest.fixture
def bases(container_env, base_image, tmp_path):
    """Two images made from the base image (a file /marker says which) and a name pointing at the first."""
    made: list[str] = []
    ids = {}
    for marker in ("A", "B"):
        folder = tmp_path / f"base-{marker}"
        folder.mkdir()
        (folder / "marker").write_text(marker + "\n")
        (folder / "Dockerfile").write_text(f"FROM {base_image}\nCOPY marker /marker\n")
        tag = f"localhost/mlops-test-base-{marker.lower()}:{uuid.uuid4().hex[:8]}"
        buildah("bud", "--layers=false", "--pull=false", "--isolation", "chroot", "-t", tag, str(folder))
        made.append(tag)
        ids[marker] = inspect(tag)["FromImageID"]
    name = f"localhost/mlops-test-base:{uuid.uuid4().hex[:8]}"
    buildah("tag", made[0], name)
    made.append(name)
    yield name, ids
    subprocess.run(["buildah", "--storage-driver", "overlay", "rmi", "-f", *made], capture_output=True, timeout=120)


def test_runtime_image_is_reused_only_while_its_key_holds(bases, make_settings, settings, tmp_path, capsys):
    base, ids = bases
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (context / "requirements.txt").write_text("numpy==1\n")
    (context / "model.txt").write_text("model 1")
    s = make_settings(
        workdir=settings.workdir, build={"builder": "buildah", "storage_driver": "overlay", "isolation": "chroot"}
    )
    builder = BuildahBuilder(s)
    tag = f"localhost/mlops-test-final:{uuid.uuid4().hex[:8]}"
    made = [tag]

    def build() -> tuple[str, dict]:
        """What the builder said about the runtime image, and the built image's buildah JSON."""
        capsys.readouterr()
        builder.build(BuildRequest(context=context, tag=tag, labels={"io.mlops.model.sha256": "0" * 64}))
        said = [line for line in capsys.readouterr().err.splitlines() if "the runtime image" in line]
        assert len(said) == 1, said
        info = inspect(tag)
        made.append(f"{rt.REPOSITORY}:{info['OCIv1']['config']['Labels'][rt.KEY_LABEL]}")
        return said[0].split()[1], info

    def content() -> list[str]:
        shown = podman(
            "run", "--rm", "--network", "none", tag, "cat", "/deps/requirements.txt", "/marker", "/app/model.txt"
        )
        assert shown.returncode == 0, shown.stderr
        return shown.stdout.splitlines()

    try:
        verb, first = build()
        assert verb == "building" and content() == ["numpy==1", "A", "model 1"]
        config = first["OCIv1"]["config"]
        assert config["User"] == "1001" and config["Labels"]["io.mlops.model.sha256"] == "0" * 64
        key = config["Labels"][rt.KEY_LABEL]
        runtime = inspect(f"{rt.REPOSITORY}:{key}")

        # a model-only change: the same runtime image, under one new layer
        (context / "model.txt").write_text("model 2")
        verb, second = build()
        assert verb == "reusing" and content() == ["numpy==1", "A", "model 2"]
        layers = second["OCIv1"]["rootfs"]["diff_ids"]
        assert layers[:-1] == runtime["OCIv1"]["rootfs"]["diff_ids"] and len(layers) == len(
            first["OCIv1"]["rootfs"]["diff_ids"]
        )

        # other requirements: built again, with them
        (context / "requirements.txt").write_text("numpy==2\n")
        verb, third = build()
        assert verb == "building" and content() == ["numpy==2", "A", "model 2"]
        assert third["OCIv1"]["config"]["Labels"][rt.KEY_LABEL] != key

        # the base name now points at another image: built again, on it
        buildah("tag", ids["B"], base)
        verb, fourth = build()
        assert verb == "building" and content() == ["numpy==2", "B", "model 2"]
        key = fourth["OCIv1"]["config"]["Labels"][rt.KEY_LABEL]
        verb, _ = build()
        assert verb == "reusing"

        # the key's tag moved onto another image (no key label, other layers): not reused, built again
        buildah("tag", ids["A"], f"{rt.REPOSITORY}:{key}")
        verb, fifth = build()
        assert verb == "building" and content() == ["numpy==2", "B", "model 2"]
        assert fifth["OCIv1"]["config"]["Labels"][rt.KEY_LABEL] == key
    finally:
        subprocess.run(
            ["buildah", "--storage-driver", "overlay", "rmi", "-f", *set(made)], capture_output=True, timeout=120
        )
