"""Demo model -> bundle -> image (buildah, or docker over podman's API) -> registry -> container."""

from __future__ import annotations

import json

import httpx
import pytest
from helpers import read_state, register_iris
from imagetools import image_layers, manifest_digest, podman

from mlops_cli import run_all
from mlops_cli.stages import assemble_server, build_image, validate_model

pytestmark = pytest.mark.integration


def image_settings(make_settings, settings, builder: str, registry: str, base_image: str, **extra):
    build = {"builder": builder, "registry": registry, "insecure": True, "repository": f"iris-{builder}"}
    if builder == "buildah":
        build.update(storage_driver="overlay", isolation="chroot")
    build.update(extra.pop("build", {}))
    return make_settings(
        workdir=settings.workdir,
        build=build,
        assemble={"base_image": base_image},
        deploy={**settings.deploy.model_dump(mode="json"), "target": "container", "run_as": "1000950000:0"},
        **extra,
    )


@pytest.fixture(params=["buildah", "docker"])
def builder(request):
    if request.param == "docker":
        return "docker", {"docker_host": request.getfixturevalue("podman_socket")}
    return "buildah", {}


def other_model(tmp_path):
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    data = load_iris()
    path = tmp_path / "tree.joblib"
    joblib.dump(DecisionTreeClassifier(max_depth=3, random_state=0).fit(data.data, data.target), path)
    return path


def test_build_push_run_and_a_model_only_rebuild(
    builder, make_settings, settings, registry, base_image, iris_artifact, tmp_path
):
    name, build_extra = builder
    first = image_settings(
        make_settings,
        settings,
        name,
        registry,
        base_image,
        build=build_extra,
        model=register_iris(settings, iris_artifact),
    )
    result = run_all.run(first)  # all seven stages, as `mlops pipeline run` runs them
    assert result.passed, result.error
    assert [row.status for row in result.stages] == ["skipped"] + ["passed"] * 6  # unit-test: no project tests
    state = read_state(settings.workdir)
    image = state["image"]
    repository = f"iris-{name}"
    assert image["reference"] == f"{registry}/{repository}@{image['digest']}"
    assert manifest_digest(registry, repository, image["tag"].rsplit(":", 1)[1]) == image["digest"]
    assert state["deployments"]["test"]["image"] == image["reference"]
    prod = state["deployments"]["prod"]
    answer = httpx.post(prod["url"] + "/v1/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert answer.json()["predictions"][0]["label"] == "setosa"
    inspected = podman("inspect", "--type", "container", prod["handle"])
    config = json.loads(inspected.stdout)[0]["Config"]
    assert config["User"] == "1000950000:0"  # runs as OpenShift would, an arbitrary UID in group 0
    labels = config["Labels"]
    assert labels["io.mlops.model.sha256"] == state["model"]["sha256"]
    # nothing the server does not need: no pip, no packages' test suites (the model answered without them)
    leftovers = podman(
        "run",
        "--rm",
        "--network",
        "none",
        image["tag"],
        "python",
        "-c",
        "import glob, importlib.util as u; print(u.find_spec('pip'), "
        "len(glob.glob('/opt/venv/lib/python3*/site-packages/*/**/tests', recursive=True)))",
    )
    assert leftovers.stdout.split() == ["None", "0"], leftovers.stdout
    assert labels["org.opencontainers.image.version"] == "1" and labels["org.opencontainers.image.created"]

    # Change only the model: only the layer holding the model (and its spec) may change.
    second = image_settings(
        make_settings,
        settings,
        name,
        registry,
        base_image,
        build=build_extra,
        model=register_iris(settings, other_model(tmp_path)),
    )
    for stage in (validate_model, assemble_server, build_image):
        stage.run(second)
    new_image = read_state(settings.workdir)["image"]
    before = image_layers(registry, repository, image["digest"])
    after = image_layers(registry, repository, new_image["digest"])
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed == [len(after) - 1], (before, after)
