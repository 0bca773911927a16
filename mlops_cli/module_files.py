"""A model's extra modules (ModelMetadata.modules): fetch their files, check each against its sha256, and say
where each goes in the bundle. validate-model checks them; assemble-server checks them again as it copies them
into the bundle (docs/bundle.md: outlier `detector`/`detector_sha256`, user modules by dotted path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .digests import sha256_file
from .errors import StageFailed
from .sources.metadata import ModelMetadata, ModuleFile, UserModule

DETECTOR_DIR = "modules/outlier"


def bundle_path(file: ModuleFile) -> str:
    """Where the file goes in the bundle: a user module at the path its dotted name implies."""
    if isinstance(file, UserModule):
        return file.bundle_file
    return f"{DETECTOR_DIR}/{Path(file.file.split('://')[-1]).name}"


def fetch_verified(source: Any, meta: ModelMetadata, root: Path) -> list[tuple[ModuleFile, Path, str]]:
    """Every module file at root/<bundle path>, with its actual sha256: (file, path, actual)."""
    out = []
    for file in meta.modules.files() if meta.modules else []:
        dest = root / bundle_path(file)
        if dest.exists():
            raise StageFailed(f"two module files of model {meta.name} go to {bundle_path(file)} in the bundle")
        path = source.fetch_module(meta, file, dest)
        out.append((file, path, sha256_file(path)))
    return out


def mismatches(fetched: list[tuple[ModuleFile, Path, str]]) -> list[str]:
    return [
        f"module file {f.file} has sha256:{actual[:12]} but metadata says sha256:{f.sha256[:12]} (corrupt or altered)"
        for f, _, actual in fetched
        if actual != f.sha256
    ]


def spec_modules(meta: ModelMetadata, monitorable: bool, labels: Any) -> list[dict[str, Any]]:
    """The spec's module chain: preprocessing (with the model's settings), outlier (with its detector) and drift
    where reference statistics allow, the user modules in order, then model and postprocessing."""
    mods = meta.modules
    pre = mods.preprocessing.model_dump(mode="json", exclude_defaults=True) if mods and mods.preprocessing else {}
    chain: list[dict[str, Any]] = [{"name": "preprocessing", "settings": pre}]
    detector = mods.outlier_detector if mods else None
    if detector is not None and not monitorable:
        raise StageFailed(
            f"model {meta.name} has an outlier detector but no reference statistics of a numeric "
            "input: the outlier module needs them",
            hint="register the model with reference data",
        )
    if monitorable:
        outlier = {"detector": bundle_path(detector), "detector_sha256": detector.sha256} if detector else {}
        chain += [{"name": "outlier", "settings": outlier}, {"name": "drift", "settings": {}}]
    for user in mods.user_modules if mods else []:
        chain.append({"name": user.class_, "settings": dict(user.settings)})
    chain += [
        {"name": "model", "settings": {}},
        {"name": "postprocessing", "settings": {"labels": labels} if labels else {}},
    ]
    return chain
