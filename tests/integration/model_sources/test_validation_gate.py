"""The "not worse than prod by more than X" rule and the audit trail, on the local target."""

from __future__ import annotations

import joblib
import pytest
from helpers import FEATURES, read_state, register_iris

from mlops_cli import run_all
from mlops_cli.errors import StageFailed
from mlops_cli.stages import validate_model
from mlops_cli.status import status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def weak_artifact(tmp_path_factory):
    """A real but poor model: always the most frequent class."""
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier

    data = load_iris()
    path = tmp_path_factory.mktemp("weak") / "weak.joblib"
    joblib.dump(DummyClassifier(strategy="prior").fit(data.data, data.target), path)
    return path


def holdout_csv(path):
    from sklearn.datasets import load_iris

    data = load_iris()
    names = ["setosa", "versicolor", "virginica"]
    lines = [",".join(FEATURES + ["species"])]
    lines += [",".join(map(str, row)) + f",{names[t]}" for row, t in zip(data.data[1::4], data.target[1::4])]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_model_worse_than_prod_is_refused_on_the_same_holdout(
    make_settings, settings, iris_artifact, weak_artifact, tmp_path
):
    good = register_iris(settings, iris_artifact)
    holdout = {"path": holdout_csv(tmp_path / "holdout.csv"), "target": "species"}
    rules = {"holdout": holdout, "max_regression": {"accuracy": 0.02, "roc_auc": 0.02}, "allow_no_prod": True}
    deploy = settings.deploy.model_dump(mode="json")
    first = run_all.run(make_settings(workdir=settings.workdir, model=good, deploy=deploy, validation=rules))
    assert first.passed, first.error
    checks = {c["name"]: c["detail"] for c in read_state(settings.workdir)["validation"]["checks"]}
    assert checks["against prod"] == "no model in prod yet: nothing to compare with (allowed by allow_no_prod)"

    weak = register_iris(settings, weak_artifact)
    with pytest.raises(StageFailed) as info:
        validate_model.run(make_settings(workdir=settings.workdir, model=weak, deploy=deploy, validation=rules))
    message = str(info.value)
    assert (
        "holdout accuracy = 0.3" in message and f"for {good} in prod" in message and "at most 0.02 allowed" in message
    )
    # the same model again is not worse than itself
    again = validate_model.run(make_settings(workdir=settings.workdir, model=good, deploy=deploy, validation=rules))
    assert any(c.name == "against prod accuracy" and "not worse by 0" in c.detail for c in again.checks)


def test_reported_metrics_are_compared_without_a_holdout(make_settings, settings, iris_artifact):
    good = register_iris(settings, iris_artifact, metrics={"accuracy": 0.96})
    deploy = settings.deploy.model_dump(mode="json")
    assert run_all.run(make_settings(workdir=settings.workdir, model=good, deploy=deploy)).passed
    worse = register_iris(settings, iris_artifact, metrics={"accuracy": 0.90})
    with pytest.raises(
        StageFailed,
        match=r"reported accuracy = 0.9 vs 0.96 for local:iris@1 in prod \(higher is better; worse by 0.06, at most 0.05 allowed",
    ):
        validate_model.run(
            make_settings(
                workdir=settings.workdir, model=worse, deploy=deploy, validation={"max_regression": {"accuracy": 0.05}}
            )
        )
    with pytest.raises(StageFailed, match="reported f1 is not known for this model: cannot compare"):
        validate_model.run(
            make_settings(
                workdir=settings.workdir, model=worse, deploy=deploy, validation={"max_regression": {"f1": 0.05}}
            )
        )


def test_local_deployments_are_audited_in_state_and_status(make_settings, settings, iris_artifact):
    ref = register_iris(settings, iris_artifact)
    run_settings = make_settings(workdir=settings.workdir, model=ref, deploy=settings.deploy.model_dump(mode="json"))
    assert run_all.run(run_settings).passed
    audit = read_state(settings.workdir)["audit"]
    assert [(a["env"], a["model_ref"], a["tag"]) for a in audit] == [
        ("test", ref, "deployed:test"),
        ("prod", ref, "deployed:prod"),
    ]
    bundle = read_state(settings.workdir)["bundle"]["bundle_digest"]
    assert all(a["digest"] == f"bundle sha256:{bundle}" and not a["written_back"] for a in audit)
    lines = "\n".join(status(run_settings).lines())
    assert f"audit      prod: {ref} tag deployed:prod, bundle sha256:{bundle}" in lines
    assert "recorded in state (the local source keeps no tags)" in lines
