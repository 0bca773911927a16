"""build-image's wheel cache: one download per distinct pinned requirements.txt, checked by sha256.

pip runs for real, offline: PIP_NO_INDEX and PIP_FIND_LINKS point it at a wheel built here.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from mlops_cli.errors import StageFailed
from mlops_cli.stages import build_image
from mlops_cli.stages.build_image import prepare_context

pytestmark = pytest.mark.integration


def write_wheel(index: Path) -> Path:
    """A minimal valid pure-Python wheel (PEP 427): a module, METADATA, WHEEL and RECORD."""
    files = {
        "tinypkg/__init__.py": "VALUE = 1\n",
        "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}"
        for name, text in files.items()
    ]
    files["tinypkg-1.0.dist-info/RECORD"] = "\n".join(record + ["tinypkg-1.0.dist-info/RECORD,,"]) + "\n"
    index.mkdir(parents=True, exist_ok=True)
    wheel = index / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.fixture
def offline_index(tmp_path: Path, monkeypatch) -> Path:
    index = tmp_path / "index"
    write_wheel(index)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "requirements.txt").write_text("tinypkg==1.0\n")
    (path / "Dockerfile").write_text("FROM scratch\n")
    return path


def test_second_build_reuses_the_wheels_and_a_damaged_entry_is_downloaded_again(
    tmp_path, offline_index, bundle, monkeypatch
):
    cache = tmp_path / "cache"
    calls = []
    real = build_image.run_program
    monkeypatch.setattr(build_image, "run_program", lambda argv, **kw: calls.append(argv) or real(argv, **kw))

    first = prepare_context(bundle, tmp_path / "ctx", 120, cache)
    assert [p.name for p in (first / "wheels").iterdir()] == ["tinypkg-1.0-py3-none-any.whl"]
    assert len(calls) == 1
    second = prepare_context(bundle, tmp_path / "ctx", 120, cache)
    assert len(calls) == 1  # no pip: the wheels came from the cache
    assert (second / "wheels" / "tinypkg-1.0-py3-none-any.whl").read_bytes() == next(
        offline_index.iterdir()
    ).read_bytes()

    [entry] = [p for p in cache.iterdir()]
    (entry / "wheels" / "tinypkg-1.0-py3-none-any.whl").write_bytes(b"damaged")
    prepare_context(bundle, tmp_path / "ctx", 120, cache)
    assert len(calls) == 2  # the damaged entry did not match its manifest
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial-")]

    (bundle / "requirements.txt").write_text("tinypkg==1.0\n# another file\n")
    prepare_context(bundle, tmp_path / "ctx", 120, cache)
    assert len(calls) == 3 and len(list(cache.iterdir())) == 2  # a different file: its own entry


def test_a_failed_download_leaves_no_cache_entry(tmp_path, offline_index, bundle):
    (bundle / "requirements.txt").write_text("tinypkg==2.0\n")
    cache = tmp_path / "cache"
    with pytest.raises(StageFailed, match="pip could not download the wheels of requirements.txt"):
        prepare_context(bundle, tmp_path / "ctx", 120, cache)
    assert list(cache.iterdir()) == []


def test_without_a_cache_every_build_downloads(tmp_path, offline_index, bundle):
    context = prepare_context(bundle, tmp_path / "ctx", 120, None)
    assert [p.name for p in (context / "wheels").iterdir()] == ["tinypkg-1.0-py3-none-any.whl"]
