"""The rules of validate-model added after review: metric directions, the metrics prod was validated with,
no prod, a verdict written back when a check cannot be made, model names, and the validator tag at assembly."""

from __future__ import annotations

import json

import pytest
from helpers import IRIS_SCHEMA, register_iris

from mlops_cli.errors import ConfigError, StageFailed
from mlops_cli.holdout import direction
from mlops_cli.sources.metadata import ModelMetadata
from mlops_cli.stages import assemble_server, validate_model
from mlops_cli.state import DeploymentRecord, State


def run(make_settings, workdir, ref, **validation):
    return validate_model.run(make_settings(workdir=workdir, model=ref, validation=validation))


def pretend_prod(workdir, metrics, ref="local:iris@1"):
    state = State.load(workdir)
    state.deployments["prod"] = DeploymentRecord(
        env="prod",
        target="local",
        url="http://127.0.0.1:1",
        model_ref=ref,
        model_name="iris",
        model_version="1",
        model_sha256="0" * 64,
        bundle_digest="0" * 64,
        bundle_path="/nonexistent",
        schema=IRIS_SCHEMA,
        revision=1,
        metrics=metrics,
    )
    state.save(workdir)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("loss", "lower"),
        ("val/rmse", "lower"),
        ("val_loss", "lower"),
        ("test-mae", "lower"),
        ("log_loss", "lower"),
        ("train/error", "lower"),
        ("mse", "lower"),
        ("accuracy", "higher"),
        ("val/f1", "higher"),
        ("roc_auc", "higher"),
        ("r2", "higher"),
        ("widgets", None),
        ("val/widgets", None),
    ],
)
def test_known_directions(name, expected):
    assert direction(name, {}) == expected


def test_a_declared_direction_wins():
    assert direction("widgets", {"widgets": "lower"}) == "lower"
    assert direction("loss", {"loss": "higher"}) == "higher"


def test_a_rise_in_loss_is_a_regression(settings, make_settings, iris_artifact):
    pretend_prod(settings.workdir, {"loss": 0.10})
    ref = register_iris(settings, iris_artifact, metrics={"loss": 0.30})
    with pytest.raises(
        StageFailed,
        match=r"reported loss = 0.3 vs 0.1 for local:iris@1 in prod \(lower is better; "
        r"worse by 0.2, at most 0.05 allowed\)",
    ):
        run(make_settings, settings.workdir, ref, max_regression={"loss": 0.05})
    better = register_iris(settings, iris_artifact, metrics={"loss": 0.08})
    checks = run(make_settings, settings.workdir, better, max_regression={"loss": 0.05}).checks
    assert any(c.name == "against prod loss" and "not worse by 0" in c.detail for c in checks)


def test_an_unknown_direction_is_a_config_error_naming_it(settings, make_settings, iris_artifact):
    pretend_prod(settings.workdir, {"widgets": 1.0})
    ref = register_iris(settings, iris_artifact, metrics={"widgets": 3.0})
    with pytest.raises(ConfigError, match="which way is better for widgets is not known"):
        run(make_settings, settings.workdir, ref, max_regression={"widgets": 0.5})
    with pytest.raises(StageFailed, match=r"widgets = 3 vs 1 .*lower is better; worse by 2"):
        run(
            make_settings,
            settings.workdir,
            ref,
            max_regression={"widgets": 0.5},
            metric_directions={"widgets": "lower"},
        )


def test_prod_is_compared_with_the_metrics_it_was_validated_with(settings, make_settings, iris_artifact):
    """The source now says 0.50 for the prod model; it was deployed with 0.97: that counts."""
    prod = register_iris(settings, iris_artifact, metrics={"accuracy": 0.50})
    pretend_prod(settings.workdir, {"accuracy": 0.97}, ref=prod)
    ref = register_iris(settings, iris_artifact, metrics={"accuracy": 0.90})
    with pytest.raises(StageFailed, match=r"accuracy = 0.9 vs 0.97 for local:iris@1 in prod \(higher is better; worse"):
        run(make_settings, settings.workdir, ref, max_regression={"accuracy": 0.01})


def test_without_recorded_metrics_prod_is_read_from_its_source_and_says_so(settings, make_settings, iris_artifact):
    prod = register_iris(settings, iris_artifact, metrics={"accuracy": 0.95})
    pretend_prod(settings.workdir, None, ref=prod)
    ref = register_iris(settings, iris_artifact, metrics={"accuracy": 0.96})
    checks = run(make_settings, settings.workdir, ref, max_regression={"accuracy": 0.01}).checks
    detail = [c.detail for c in checks if c.name == "against prod accuracy"][0]
    assert "vs 0.95" in detail and "metrics read from its source now" in detail


def test_no_prod_fails_unless_allowed(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact)
    with pytest.raises(StageFailed, match="no model in prod yet: nothing to compare with"):
        run(make_settings, settings.workdir, ref, max_regression={"accuracy": 0.01})
    result = run(make_settings, settings.workdir, ref, max_regression={"accuracy": 0.01}, allow_no_prod=True)
    assert any(c.detail.endswith("(allowed by allow_no_prod)") for c in result.checks)


class TaggingSource:
    """Wraps the local source and records the verdict write-backs (as ClearML's would be written)."""

    def __init__(self, inner):
        self.inner, self.written = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write_back(self, ref, *, add_tags, remove_tags, metadata):
        self.written.append((add_tags, remove_tags, metadata["mlops.validation.verdict"]))
        return True


def test_a_check_that_cannot_be_made_writes_the_failed_verdict(settings, make_settings, iris_artifact, monkeypatch):
    ref = register_iris(settings, iris_artifact, metrics={"widgets": 1.0})
    pretend_prod(settings.workdir, {"widgets": 1.0})
    real = validate_model.get_source
    wrapped = {}
    monkeypatch.setattr(
        validate_model, "get_source", lambda scheme, s: wrapped.setdefault("src", TaggingSource(real(scheme, s)))
    )
    with pytest.raises(ConfigError):
        run(make_settings, settings.workdir, ref, max_regression={"widgets": 0.5})
    assert wrapped["src"].written == [(["mlops:rejected"], ["mlops:validated"], "failed")]


@pytest.mark.parametrize("name", ["a/b", "../x", ".hidden", "a b", ""])
def test_model_names_that_would_reach_paths_or_images_are_refused(name):
    with pytest.raises(ValueError, match="cannot name a bundle or an image"):
        ModelMetadata(name=name, version="1", sha256="0" * 64, artifact_name="m.joblib")
    with pytest.raises(ValueError, match="cannot name a bundle or an image tag"):
        ModelMetadata(name="iris", version="../1", sha256="0" * 64, artifact_name="m.joblib")


def test_assembly_refuses_a_model_whose_validator_tag_was_taken_off(settings, make_settings, iris_artifact):
    ref = register_iris(settings, iris_artifact)
    run(make_settings, settings.workdir, ref)
    path = settings.store_path / "models" / "iris" / "1.json"
    meta = json.loads(path.read_text())
    meta["tags"] = []  # the validator withdrew it (tags are outside the metadata digest)
    path.write_text(json.dumps(meta))
    with pytest.raises(StageFailed, match="no longer carries the validator tag 'validated'"):
        assemble_server.run(settings)


class ProdTaggedSource(TaggingSource):
    """The local source, as if some of its models carried deployed:prod (as ClearML models do)."""

    def __init__(self, inner, tagged_refs):
        super().__init__(inner)
        self.tagged_refs = tagged_refs

    def tagged(self, tag):
        from mlops_cli.sources import parse_ref

        return [parse_ref(r) for r in self.tagged_refs] if tag == "deployed:prod" else []


def test_without_prod_in_state_the_model_tagged_deployed_prod_is_compared(
    settings, make_settings, iris_artifact, monkeypatch
):
    prod = register_iris(settings, iris_artifact, metrics={"accuracy": 0.97})
    ref = register_iris(settings, iris_artifact, metrics={"accuracy": 0.90})
    real = validate_model.get_source
    tagged = [prod]
    monkeypatch.setattr(validate_model, "get_source", lambda scheme, s: ProdTaggedSource(real(scheme, s), tagged))
    with pytest.raises(StageFailed, match=r"accuracy = 0.9 vs 0.97 for local:iris@1 in prod \(by its tag\)"):
        run(make_settings, settings.workdir, ref, max_regression={"accuracy": 0.01})
    tagged.append(ref)
    with pytest.raises(StageFailed, match="2 models carry the tag 'deployed:prod' in local: cannot tell which"):
        run(make_settings, settings.workdir, ref, max_regression={"accuracy": 0.01})
