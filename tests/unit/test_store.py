import json

import pytest
from helpers import register_iris

from mlops_cli.errors import NotFoundError, StageFailed, UsageError
from mlops_cli.register import normalize_examples, reference_stats
from mlops_cli.sources import parse_ref, sha256_file
from mlops_cli.sources.local import LocalStore


def test_register_is_content_addressed_and_versioned(settings, iris_artifact):
    assert register_iris(settings, iris_artifact) == "local:iris@1"
    assert register_iris(settings, iris_artifact) == "local:iris@2"
    store = LocalStore(settings.store_path)
    sha = sha256_file(iris_artifact)
    assert store.blob(sha).read_bytes() == iris_artifact.read_bytes()
    assert list((settings.store_path / "blobs" / "sha256").iterdir()) == [store.blob(sha)]  # stored once
    meta = store.metadata(parse_ref("local:iris"))  # no version: the latest
    assert meta.version == "2" and meta.sha256 == sha and meta.framework == "sklearn"
    assert meta.reference["features"]["sepal_length_cm"]["quantiles"][0] == 5.1


def test_unknown_model_and_version(settings, iris_artifact):
    store = LocalStore(settings.store_path)
    with pytest.raises(NotFoundError, match=r"model local:nope not found .*models: none"):
        store.metadata(parse_ref("local:nope"))
    register_iris(settings, iris_artifact)
    with pytest.raises(NotFoundError, match=r"versions of iris: 1"):
        store.metadata(parse_ref("local:iris@7"))


def test_damaged_metadata_is_a_clear_error(settings, iris_artifact):
    register_iris(settings, iris_artifact)
    path = settings.store_path / "models" / "iris" / "1.json"
    data = json.loads(path.read_text())
    del data["sha256"]
    path.write_text(json.dumps(data))
    with pytest.raises(StageFailed, match="metadata of model local:iris is invalid: sha256"):
        LocalStore(settings.store_path).metadata(parse_ref("local:iris"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("iris", "has no scheme"),
        ("clearml-x:abc", "unknown model source 'clearml-x'"),
        ("local:", "malformed model reference"),
        ("local:a b", "malformed model reference"),
    ],
)
def test_bad_references(text, message):
    with pytest.raises(UsageError, match=message):
        parse_ref(text)


def test_bad_registrations(settings, iris_artifact, tmp_path):
    with pytest.raises(NotFoundError):
        register_iris(settings, tmp_path / "missing.joblib")
    with pytest.raises(UsageError, match="invalid model metadata: schema.inputs"):
        register_iris(settings, iris_artifact, schema={"inputs": [], "outputs": [{"name": "y"}]})
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    with pytest.raises(UsageError, match="cannot tell the framework"):
        register_iris(settings, odd, framework=None)


def test_examples_are_normalized_to_request_bodies():
    assert normalize_examples({"instances": [[1, 2]]}) == [{"instances": [[1, 2]]}]
    assert normalize_examples([[1, 2], {"a": 1}]) == [{"instances": [[1, 2]]}, {"instances": [{"a": 1}]}]
    with pytest.raises(UsageError):
        normalize_examples([])


def test_reference_stats():
    stats = reference_stats({"x": [1.0, 2.0, 3.0, 4.0, float("nan")]})
    x = stats["features"]["x"]
    assert (x["count"], x["mean"], x["min"], x["max"]) == (4, 2.5, 1.0, 4.0)
    assert x["quantiles"][5] == 2.5 and len(x["quantiles"]) == 11


def test_optional_input_needs_a_default_of_its_type(settings, iris_artifact):
    schema = {
        "inputs": [{"name": "a", "type": "number", "required": False}],
        "outputs": [{"name": "label", "type": "string"}],
    }
    with pytest.raises(UsageError, match="optional input 'a' needs a default of type number"):
        register_iris(settings, iris_artifact, schema=schema)
    schema["inputs"][0]["default"] = 0.5
    assert register_iris(settings, iris_artifact, schema=schema) == "local:iris@1"


def test_python_model_needs_a_py_file_and_a_class(settings, iris_artifact, tmp_path):
    with pytest.raises(UsageError, match="a python model is a .py file with a model class"):
        register_iris(settings, iris_artifact, framework="python", class_name="M")
    source = tmp_path / "m.py"
    source.write_text("class M:\n    def predict(self, X):\n        return [0] * len(X)\n")
    with pytest.raises(UsageError, match="--class-name"):
        register_iris(settings, source, framework="python")


def test_a_registered_version_is_durable_and_a_crash_leaves_nothing_behind(settings, iris_artifact, monkeypatch):
    """Blob, metadata and their directories are fsynced before register returns (a power cut must not lose a
    version, nor keep metadata naming a blob cut short); leftovers of a register killed mid-way are cleaned up,
    and a blob of the wrong size is written again."""
    import os

    import mlops_cli.sources.local as local

    store = LocalStore(settings.store_path)
    first = store.register(iris_artifact, name="iris")
    folder = settings.store_path / "models" / "iris"
    (folder / ".tmp-killed").write_text("{")  # a register killed between its write and its rename
    blob = store.blob(first.sha256)
    blob.write_bytes(b"")  # what a power cut could leave of a blob written without fsync
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(local.os, "fsync", fsync)
    second = store.register(iris_artifact, name="iris")
    assert second.version == "2" and blob.read_bytes() == iris_artifact.read_bytes()
    for path in (blob, blob.parent, folder / "2.json", folder):
        assert path.stat().st_ino in synced, path
    assert not list(folder.glob(".tmp-*")) and not list(blob.parent.glob(".tmp-*"))


def test_a_store_that_cannot_be_written_is_one_line_and_nothing_registered(settings, iris_artifact):
    store = LocalStore(settings.store_path)
    store.register(iris_artifact, name="iris")
    lock = settings.store_path / "models" / "iris" / ".lock"
    lock.unlink()
    lock.mkdir()  # (the tests run as root: a read-only directory would not stop them)
    with pytest.raises(StageFailed, match=r"^cannot write the local store: .*\.lock: Is a directory$"):
        store.register(iris_artifact, name="iris")
    assert store.versions("iris") == ["1"]
