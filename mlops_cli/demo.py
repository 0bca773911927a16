"""`mlops demo`: train a small model on data scikit-learn ships, register it, run every stage."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pydantic import BaseModel, ConfigDict

from . import run_all
from .extras import SERVER_STACK, require
from .register import reference_stats
from .settings import Settings
from .sources.local import LocalStore
from .ui import progress

FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
DEMO_THRESHOLDS = {"accuracy": ">= 0.9", "f1_macro": ">= 0.9"}


class DemoResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    model_ref: str
    workdir: str
    url: str | None
    curl: str | None
    running: dict[str, str] = {}  # env -> URL of each server left running
    pipeline: run_all.PipelineResult

    def lines(self) -> list[str]:
        out = self.pipeline.lines()
        if self.pipeline.passed:
            workdir = shlex.quote(self.workdir)
            out += [
                "",
                f"{self.model_ref} is serving at {self.url}",
                "try it:",
                f"  {self.curl}",
                "left running: " + ", ".join(f"the {env} server at {url}" for env, url in self.running.items()),
                f"see them:  mlops status --workdir {workdir}",
                f"stop them: mlops stop --workdir {workdir}",
            ]
        return out


def train_and_register(settings: Settings) -> str:
    """Train an iris classifier, register it with everything validation needs; return its ref."""
    require(("sklearn", "joblib"), "mlops demo trains a scikit-learn model", "sklearn")
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    progress("training a logistic regression on scikit-learn's iris data set")
    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, stratify=data.target, random_state=0
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "f1_macro": float(f1_score(y_test, predicted, average="macro")),
    }
    folder = settings.workdir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    artifact = folder / "iris.joblib"
    joblib.dump(model, artifact)
    rows: list[dict[str, Any]] = [dict(zip(FEATURES, map(float, row))) for row in x_test[:3]]
    examples: list[dict[str, Any]] = [{"instances": rows}, {"instances": [list(map(float, x_test[3]))]}]
    schema = {
        "inputs": [{"name": f, "type": "number"} for f in FEATURES],
        "outputs": [{"name": "label", "type": "string"}, {"name": "probability", "type": "number"}],
    }
    reference = reference_stats({f: list(x_train[:, i]) for i, f in enumerate(FEATURES)})
    meta = LocalStore(settings.store_path).register(
        artifact,
        name="iris-demo",
        framework="sklearn",
        task="classification",
        metrics=metrics,
        tags=["validated"],
        schema=schema,
        examples=examples,
        reference=reference,
        labels=[str(n) for n in data.target_names],
    )
    progress(f"registered local:iris-demo@{meta.version}: accuracy {metrics['accuracy']:.3f}")
    return f"local:iris-demo@{meta.version}"


def run(settings: Settings) -> DemoResult:
    if settings.deploy.target == "local":
        require(SERVER_STACK, "mlops demo serves the model with the local target", "serve")
    require(("pytest",), "mlops demo runs the unit-test stage (pytest)", "unit-test")
    ref = train_and_register(settings)
    validation = settings.validation
    if not validation.thresholds:
        validation = validation.model_copy(update={"thresholds": DEMO_THRESHOLDS})
    settings = settings.model_copy(update={"model": ref, "validation": validation})
    result = run_all.run(settings)
    url = curl = None
    running: dict[str, str] = {}
    if result.passed:
        running = {
            env: f"http://{cfg.host}:{cfg.port}"
            for env, cfg in (("test", settings.deploy.test), ("prod", settings.deploy.prod))
        }
        url = f"http://{settings.deploy.prod.host}:{settings.deploy.prod.port}"
        body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
        curl = f"curl -s -X POST {url}/v1/predict -H 'content-type: application/json' -d '{body}'"
    return DemoResult(
        model_ref=ref, workdir=str(settings.workdir), url=url, curl=curl, running=running, pipeline=result
    )
