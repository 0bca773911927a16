"""The built-in modules, by name, and the builder that turns ``spec.modules`` into a chain.

A module class takes ``(ctx, settings)``, where ``settings`` is an instance of its own
``Settings`` pydantic model (unknown keys refused). Adding a module is one class and one
entry in :data:`MODULES`. The classes are imported when a chain is built, so importing this
package (or :mod:`serving.modules.settings`) costs no numpy: the toolkit reads it too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pydantic import ValidationError

from serving.errors import BundleError, one_line
from serving.modules.user import is_user_module, load_user_class, settings_for

if TYPE_CHECKING:
    from serving.pipeline import Module, ModuleContext

MODULES: dict[str, str] = {
    "preprocessing": "serving.modules.preprocessing:Preprocessing",
    "outlier": "serving.modules.outlier:Outlier",
    "drift": "serving.modules.drift:Drift",
    "model": "serving.modules.model:ModelModule",
    "postprocessing": "serving.modules.postprocessing:Postprocessing",
}


def module_class(name: str) -> type:
    """The class of the built-in module ``name`` (a key of :data:`MODULES`)."""
    module, _, attr = MODULES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


# every chain runs these, once each, in this order (other modules may sit between them)
REQUIRED_ORDER = ("preprocessing", "model", "postprocessing")
# these watch the validated inputs, so they sit between preprocessing and the model
BEFORE_MODEL = ("outlier", "drift")


def build_modules(ctx: ModuleContext) -> list[Module]:
    """Instantiate ``spec.modules`` in order; BundleError names the first problem."""
    names = [m.name for m in ctx.spec.modules]
    classes: list[type] = []
    for i, name in enumerate(names):
        if name in MODULES:
            classes.append(module_class(name))
        elif is_user_module(name):
            classes.append(load_user_class(ctx.bundle_dir, name, f"spec.json: modules.{i}.name"))
        else:
            raise BundleError(
                f"spec.json: modules.{i}.name: unknown module {name!r} (known: {', '.join(MODULES)}; "
                "or a user module by dotted path, e.g. my_modules.enrich.AddRatio)"
            )
    if [n for n in names if n in REQUIRED_ORDER] != list(REQUIRED_ORDER):
        raise BundleError(
            f"spec.json: modules: must include {', '.join(REQUIRED_ORDER)} once each, in that order; got {names}"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BundleError(f"spec.json: modules: {', '.join(twice)} listed more than once")
    for name in BEFORE_MODEL:
        if name in names and not names.index("preprocessing") < names.index(name) < names.index("model"):
            raise BundleError(f"spec.json: modules: {name} must come after preprocessing and before model; got {names}")
    modules = []
    for i, (entry, cls) in enumerate(zip(ctx.spec.modules, classes)):
        try:
            settings = settings_for(cls, entry.settings)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
            raise BundleError(f"spec.json: modules.{i}.settings.{where}: {msg}") from None
        try:
            module = cls(ctx, settings)
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(
                f"spec.json: modules.{i}: {entry.name} cannot be built: {type(exc).__name__}: {one_line(exc)}"
            ) from None
        if getattr(module, "name", None) != entry.name and is_user_module(entry.name):
            module.name = entry.name  # the label it is timed under
        modules.append(module)
    return modules
