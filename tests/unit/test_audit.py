"""The audit trail when the source cannot be written: the deployment stands, state says why."""

from __future__ import annotations

from mlops_cli import audit
from mlops_cli.errors import TemporaryError
from mlops_cli.state import DeploymentRecord, State


class UnreachableSource:
    """A source whose server is down when the audit writes back (as ClearML's would be)."""

    def write_back(self, ref, **kwargs):
        raise TemporaryError("ClearML server http://127.0.0.1:9 is unreachable: ConnectError")


def deployment(env: str, ref: str) -> DeploymentRecord:
    return DeploymentRecord(
        env=env,
        target="local",
        url="http://127.0.0.1:1",
        model_ref=ref,
        model_name="iris",
        model_version="1",
        model_sha256="a" * 64,
        bundle_digest="b" * 64,
        bundle_path="/x",
        schema={},
        revision=1,
    )


def test_a_failed_write_back_is_kept_in_state_and_does_not_raise(settings, monkeypatch, capsys):
    state = State()
    state.deployments["prod"] = deployment("prod", "clearml:abc")
    state.save(settings.workdir)
    monkeypatch.setattr(audit, "get_source", lambda scheme, s: UnreachableSource())
    record = audit.record_deployment(settings, "prod")
    assert record is not None and not record.written_back
    assert "not written to clearml:abc: ClearML server http://127.0.0.1:9 is unreachable" in record.detail
    saved = State.load(settings.workdir).audit
    assert [(a.env, a.model_ref, a.tag, a.digest) for a in saved] == [
        ("prod", "clearml:abc", "deployed:prod", "unknown")
    ]
    assert "warning: the audit trail of clearml:abc was not written back" in capsys.readouterr().err


def test_nothing_deployed_records_nothing(settings):
    State().save(settings.workdir)
    assert audit.record_deployment(settings, "test") is None
    assert State.load(settings.workdir).audit == []


def test_the_history_is_bounded(settings):
    state = State()
    state.deployments["test"] = deployment("test", "local:iris@1")
    state.save(settings.workdir)
    for _ in range(audit.HISTORY + 5):
        audit.record_deployment(settings, "test")
    assert len(State.load(settings.workdir).audit) == audit.HISTORY


class RecordingSource:
    """A source keeping tags per model, as ClearML does, and finding models by tag (models.get_all tags=[...])."""

    def __init__(self, tags: dict[str, list[str]]):
        self.tags = tags

    def write_back(self, ref, *, add_tags, remove_tags, metadata):
        key = str(ref)
        self.tags[key] = [t for t in self.tags.get(key, []) if t not in remove_tags and t not in add_tags] + add_tags
        return True

    def tagged(self, tag):
        from mlops_cli.sources import parse_ref

        return [parse_ref(k) for k, v in self.tags.items() if tag in v]


def audit_of(env: str, ref: str):
    from mlops_cli.state import AuditRecord

    return AuditRecord(env=env, model_ref=ref, model_sha256="a" * 64, digest="d", target="local", tag=f"deployed:{env}")


def test_deployed_test_moves_to_the_new_model_while_the_old_one_runs_in_prod(settings, monkeypatch):
    """A is in prod and test; B replaces A in test: A keeps deployed:prod and loses deployed:test."""
    source = RecordingSource({"clearml:A": ["deployed:test", "deployed:prod"]})
    state = State()
    state.deployments["prod"] = deployment("prod", "clearml:A")
    state.deployments["test"] = deployment("test", "clearml:B")
    state.audit = [audit_of("test", "clearml:A"), audit_of("prod", "clearml:A")]
    state.save(settings.workdir)
    monkeypatch.setattr(audit, "get_source", lambda scheme, s: source)
    audit.record_deployment(settings, "test")
    assert source.tags == {"clearml:A": ["deployed:prod"], "clearml:B": ["deployed:test"]}


def test_an_env_sharing_the_tag_name_keeps_the_old_model_tagged(make_settings, monkeypatch):
    settings = make_settings(audit={"deployed_tags": {"test": "deployed", "prod": "deployed"}})
    source = RecordingSource({"clearml:A": ["deployed"]})
    state = State()
    state.deployments["prod"] = deployment("prod", "clearml:A")
    state.deployments["test"] = deployment("test", "clearml:B")
    state.audit = [audit_of("test", "clearml:A")]
    state.save(settings.workdir)
    monkeypatch.setattr(audit, "get_source", lambda scheme, s: source)
    audit.record_deployment(settings, "test")
    assert source.tags == {"clearml:A": ["deployed"], "clearml:B": ["deployed"]}


def test_stale_tags_on_models_this_workdir_never_recorded_are_taken_off(settings, monkeypatch):
    """C was deployed from another workdir, D's tag survived a failed write-back: only the new model keeps it."""
    source = RecordingSource(
        {"clearml:C": ["deployed:prod", "keep"], "clearml:D": ["deployed:prod"], "clearml:E": ["deployed:test"]}
    )
    state = State()
    state.deployments["prod"] = deployment("prod", "clearml:N")
    state.save(settings.workdir)
    monkeypatch.setattr(audit, "get_source", lambda scheme, s: source)
    audit.record_deployment(settings, "prod")
    assert source.tags == {
        "clearml:C": ["keep"],
        "clearml:D": [],
        "clearml:E": ["deployed:test"],
        "clearml:N": ["deployed:prod"],
    }
