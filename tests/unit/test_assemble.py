import json
from pathlib import Path

import pytest
from helpers import register_iris

from mlops_cli.errors import PrerequisiteError, StageFailed
from mlops_cli.sources import sha256_file
from mlops_cli.sources.local import LocalStore
from mlops_cli.stages import assemble_server, build_image, validate_model
from mlops_cli.state import State


@pytest.fixture
def validated(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact)
    validate_model.run(make_settings(workdir=settings.workdir, model=ref))
    return settings


def test_assemble_needs_a_validated_model(settings):
    with pytest.raises(PrerequisiteError, match="run `mlops validate-model --model REF` first"):
        assemble_server.run(settings)
    assert State.load(settings.workdir).stages["assemble-server"].status == "failed"


def test_bundle_is_self_contained(validated, iris_artifact):
    result = assemble_server.run(validated)
    bundle = Path(result.bundle_path)
    spec = json.loads((bundle / "spec.json").read_text())
    assert spec["model"]["sha256"] == sha256_file(bundle / spec["model"]["artifact"]) == sha256_file(iris_artifact)
    assert [m["name"] for m in spec["modules"]] == ["preprocessing", "outlier", "drift", "model", "postprocessing"]
    assert spec["modules"][4]["settings"]["labels"] == ["setosa", "versicolor", "virginica"]
    assert (bundle / "serving" / "__main__.py").is_file()
    assert not list(bundle.rglob("__pycache__"))
    reqs = (bundle / "requirements.txt").read_text().splitlines()
    assert all("==" in line for line in reqs) and any(line.startswith("scikit-learn==") for line in reqs)
    dockerfile = (bundle / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "USER 1001" in dockerfile and "COPY --from=app --chown=1001:0 /app/ /app/" in dockerfile
    assert "pip install --no-index" in dockerfile  # no network during the build
    runtime = dockerfile[dockerfile.index("FROM python:3.11-slim AS runtime\n") : dockerfile.index("AS app\n")]
    assert "USER 1001" in runtime and runtime.index("COPY --from=deps") < runtime.index("COPY --from=code")
    final = dockerfile[dockerfile.rindex("\nFROM ") :]  # the final stage: the runtime stage and the model
    assert final.startswith("\nFROM runtime\n")  # so that `build-image` can build the runtime on its own
    assert dockerfile.rstrip().endswith("COPY --from=app --chown=1001:0 /app/ /app/")  # the model layer last
    assert json.loads((bundle / "examples.json").read_text())[0]["instances"]
    assert not any("mlops_cli" in p.read_text() for p in (bundle / "serving").rglob("*.py"))


def test_no_reference_statistics_no_monitoring_modules(settings, make_settings, iris_artifact):
    s = make_settings(workdir=settings.workdir, model=register_iris(settings, iris_artifact, reference=None))
    validate_model.run(s)
    spec = json.loads((Path(assemble_server.run(s).bundle_path) / "spec.json").read_text())
    assert [m["name"] for m in spec["modules"]] == ["preprocessing", "model", "postprocessing"]


def test_same_content_gives_the_same_bundle(validated):
    first = assemble_server.run(validated)
    second = assemble_server.run(validated)
    assert first.bundle_path == second.bundle_path and first.bundle_digest == second.bundle_digest
    assert len(list((validated.workdir / "bundles").iterdir())) == 1  # no temp dirs left


def test_artifact_altered_after_validation_is_refused(validated, iris_artifact):
    blob = LocalStore(validated.store_path).blob(sha256_file(iris_artifact))
    blob.write_bytes(b"not the model")
    with pytest.raises(StageFailed, match="corrupt or altered; nothing was assembled"):
        assemble_server.run(validated)
    assert not (validated.workdir / "bundles").exists() or not list((validated.workdir / "bundles").iterdir())


def test_build_image_is_skipped_visibly_without_a_builder(validated, make_settings):
    assemble_server.run(validated)
    result = build_image.run(validated)
    assert (result.status, result.message) == ("skipped", "skipped: no image builder configured")
    assert State.load(validated.workdir).stages["build-image"].status == "skipped"


def test_unknown_builder_lists_the_known_ones(validated, make_settings):
    from mlops_cli.errors import ConfigError

    assemble_server.run(validated)
    with pytest.raises(ConfigError, match="unknown image builder 'kaniko'; known: buildah, docker"):
        build_image.run(make_settings(workdir=validated.workdir, build={"builder": "kaniko"}))


def test_module_files_registered_with_the_cli_reach_the_bundle(settings, make_settings, iris_artifact, tmp_path):
    """`mlops model register --modules FILE`: preprocessing settings and a user module by dotted path."""
    from helpers import IRIS_SCHEMA, run_cli

    (tmp_path / "enrich.py").write_text(
        "class Tag:\n    def __init__(self, ctx, settings):\n        pass\n"
        "    async def load(self):\n        pass\n"
        "    async def process(self, batch):\n        return batch\n"
    )
    (tmp_path / "schema.json").write_text(json.dumps(IRIS_SCHEMA))
    (tmp_path / "modules.yaml").write_text(
        "preprocessing: {rename: {sl: sepal_length_cm}}\n"
        "user_modules: [{file: enrich.py, class: team_mods.enrich.Tag, settings: {level: 2}}]\n"
    )
    done = run_cli(
        "model",
        "register",
        str(iris_artifact),
        "--name",
        "iris",
        "--tag",
        "validated",
        "--schema",
        str(tmp_path / "schema.json"),
        "--modules",
        str(tmp_path / "modules.yaml"),
        "--workdir",
        str(settings.workdir),
    )
    assert done.returncode == 0, done.stderr
    validate_model.run(make_settings(workdir=settings.workdir, model="local:iris@1"))
    bundle = Path(assemble_server.run(settings).bundle_path)
    spec = json.loads((bundle / "spec.json").read_text())
    assert [m["name"] for m in spec["modules"]] == ["preprocessing", "team_mods.enrich.Tag", "model", "postprocessing"]
    assert spec["modules"][0]["settings"] == {"rename": {"sl": "sepal_length_cm"}}
    assert spec["modules"][1]["settings"] == {"level": 2}
    assert (bundle / "team_mods" / "enrich.py").read_text() == (tmp_path / "enrich.py").read_text()


def test_an_altered_module_file_in_the_store_is_refused_at_assembly(settings, make_settings, iris_artifact, tmp_path):
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import IsolationForest

    detector = tmp_path / "detector.joblib"  # a real one: validation loads it as the server will
    joblib.dump(IsolationForest(n_estimators=10, random_state=0).fit(load_iris().data), detector)
    ref = register_iris(settings, iris_artifact, modules={"outlier_detector": {"file": str(detector)}})
    validate_model.run(make_settings(workdir=settings.workdir, model=ref))
    LocalStore(settings.store_path).blob(sha256_file(detector)).write_bytes(b"swapped after validation")
    with pytest.raises(StageFailed, match="module file detector.joblib has sha256:.*corrupt or altered"):
        assemble_server.run(settings)
    assert not [p for p in (settings.workdir / "bundles").iterdir() if not p.name.startswith(".")]


def test_server_limits_reach_the_bundle_and_bad_ones_are_one_line_config_errors(validated, make_settings):
    from mlops_cli.errors import ConfigError

    limits = {"max_inflight_bytes": 16777216, "max_rows": 50000, "header_timeout_seconds": 5}
    s = make_settings(workdir=validated.workdir, model=validated.model, assemble={"server_limits": limits})
    spec = json.loads((Path(assemble_server.run(s).bundle_path) / "spec.json").read_text())
    given = {"max_body_bytes": 1048576, "drain_seconds": 1.0, **limits}  # the rest: the runtime's defaults
    assert {k: spec["server"][k] for k in given} == given
    assert isinstance(spec["server"]["max_rows"], int)
    for bad, message in (
        ({"max_rowz": 5}, "assemble.server_limits: max_rowz: unknown key"),
        ({"max_inflight_bytes": 1000}, "max_inflight_bytes (1000) must be at least max_body_bytes"),
    ):
        s = make_settings(workdir=validated.workdir, model=validated.model, assemble={"server_limits": bad})
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            assemble_server.run(s)
