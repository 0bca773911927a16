"""Shared fixtures: settings on a temp work directory, a real iris model, clean-up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port


@pytest.fixture(scope="session")
def iris_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real scikit-learn pipeline trained on iris, saved with joblib."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(data.data, data.target)
    path = tmp_path_factory.mktemp("models") / "iris.joblib"
    joblib.dump(model, path)
    return path


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Any]:
    """Settings on a temp work directory with free ports; what they deployed is stopped afterwards."""
    from mlops_cli.config import load_settings
    from mlops_cli.status import stop

    made = []

    def build(workdir: Path | None = None, **flags: Any):
        flags.setdefault("workdir", workdir or tmp_path / "work")
        deploy = flags.setdefault("deploy", {})
        deploy.setdefault("test", {"port": free_port()})
        deploy.setdefault("prod", {"port": free_port()})
        # most tests are about other checks than metric thresholds; tests of the thresholds rule say False
        flags.setdefault("validation", {}).setdefault("allow_no_thresholds", True)
        settings = load_settings(None, flags, environ={})
        made.append(settings)
        return settings

    yield build
    for settings in made:
        if (settings.workdir / "state.json").exists():
            stop(settings)


@pytest.fixture
def settings(make_settings):
    return make_settings()
