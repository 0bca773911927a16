"""Which extra of the distribution carries which module, and the one-line error when one is missing.

The CLI itself (`import mlops_cli.cli`, `mlops --help`, config, state, render, build-image, the container and
kubernetes targets) needs only the base install's light packages. A command that needs more checks for it
here, before it starts any work, and names the extra that brings it:

    mlops: the local target runs the server, which needs the 'serve' extra (fastapi is not installed):
    pip install 'mlops-pipeline-kit[serve]'

(one line). setup.cfg's [options.extras_require] is the other half of this table; tests/unit/test_extras.py
checks that the two agree.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

from . import DISTRIBUTION
from .errors import UsageError

# top-level module -> the extra that installs it
EXTRA_OF = {
    # the serving runtime: the local target and validate-model's trial run start it in this venv,
    # assemble-server pins its versions, the alert relay and chatops are servers of the same stack
    "fastapi": "serve",
    "uvicorn": "serve",
    "httptools": "serve",
    "uvloop": "serve",
    "orjson": "serve",
    "prometheus_client": "serve",
    "starlette": "serve",
    "numpy": "serve",
    "joblib": "serve",
    "sklearn": "sklearn",  # mlops demo trains a model; sklearn models are loaded and scored with it
    "pytest": "unit-test",  # the unit-test stage runs pytest in this venv
    "slack_sdk": "slack",
    "onnxruntime": "onnx",
    "boto3": "s3",
    "botocore": "s3",
    "clearml": "clearml",
    "docker": "docker",
    "kafka": "kafka",
    "pyarrow": "parquet",
    "kubernetes": "kubernetes",
    "kubernetes_validate": "kubernetes",
    "jenkins": "chatops",
}

# what `python -m serving` imports before it answers (orjson and uvloop are optional speed-ups)
SERVER_STACK = ("fastapi", "uvicorn", "httptools", "prometheus_client", "numpy")
# what loading a model of each framework imports, besides the server stack
FRAMEWORK_MODULES = {"sklearn": ("sklearn", "joblib"), "onnx": ("onnxruntime",), "python": ()}
# distribution name (as pinned in a bundle's requirements.txt) -> its top-level module
DIST_MODULE = {"prometheus-client": "prometheus_client", "scikit-learn": "sklearn"}


class MissingExtra(UsageError):
    """A command needs a package of an extra that is not installed (exit 2, like any usage error)."""


def install_line(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def missing_extra(purpose: str, module: str, extra: str | None = None) -> MissingExtra:
    """The one-line error: `<purpose>, which needs the 'X' extra (M is not installed): pip install '...[X]'`."""
    extra = extra or EXTRA_OF.get(module.split(".")[0])
    if extra is None:
        return MissingExtra(f"{purpose}, which needs {module}, and it is not installed: pip install {module}")
    return MissingExtra(
        f"{purpose}, which needs the {extra!r} extra ({module} is not installed): {install_line(extra)}"
    )


def missing(modules: Iterable[str]) -> list[str]:
    """Those of `modules` that cannot be imported here (found neither in sys.modules nor on the path)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module without a spec
            found = False
        if not found:
            out.append(name)
    return out


def require(modules: Iterable[str], purpose: str, extra: str | None = None) -> None:
    """Raise the one-line MissingExtra for the first of `modules` that is not installed.

    Only looks (importlib.util.find_spec): for a module that runs in a child process (the server, pytest)
    or is imported later by the caller."""
    absent = missing(modules)
    if absent:
        raise missing_extra(purpose, absent[0], extra)


def load(module: str, purpose: str, extra: str | None = None):
    """Import and return `module`; the one-line MissingExtra if it (or a package it needs) is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(purpose, exc.name or module, extra or EXTRA_OF.get(module.split(".")[0])) from None
