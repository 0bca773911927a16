"""User modules: Python files shipped in the bundle, named in the chain by dotted path.

A module entry whose name is a dotted path, ``"pkg.file.ClassName"``, loads ``BUNDLE/pkg/file.py``
(packages need no ``__init__.py``) and uses ``ClassName`` as a module: ``ClassName(ctx,
settings)``, then ``async load()`` and ``async process(batch)`` as for the built-ins
(serving.pipeline). ``settings`` is validated by the class's own pydantic ``Settings`` when it has
one, else passed as the dict from the spec. The file must be inside the bundle; the module is
timed under its dotted name. Loading runs the file, once, when the app is built.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from serving.errors import BundleError, one_line

PREFIX = "mlops_bundle_user."


def is_user_module(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and all(p.isidentifier() for p in parts)


def load_user_class(bundle_dir: Path, dotted: str, where: str) -> type:
    """The class named by ``dotted`` from its file in the bundle; BundleError (one line) otherwise."""
    *parts, class_name = dotted.split(".")
    root = Path(bundle_dir).resolve()
    path = root.joinpath(*parts).with_suffix(".py")
    if not path.is_file() or root not in path.resolve().parents:
        raise BundleError(f"{where}: user module {dotted!r}: no file {'/'.join(parts)}.py in the bundle")
    module_name = PREFIX + ".".join(parts)
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(path):
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise BundleError(
                f"{where}: user module {dotted!r} failed to load: {type(exc).__name__}: {one_line(exc)}"
            ) from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise BundleError(f"{where}: user module {dotted!r}: {'/'.join(parts)}.py defines no class {class_name!r}")
    for method in ("load", "process"):
        if not callable(getattr(cls, method, None)):
            raise BundleError(f"{where}: user module {dotted!r} has no {method}() method")
    return cls


def settings_for(cls: type, settings: dict[str, Any]) -> Any:
    """The class's own Settings model validates them when it has one; else the dict as is."""
    model = getattr(cls, "Settings", None)
    return model.model_validate(settings) if model is not None and hasattr(model, "model_validate") else settings
