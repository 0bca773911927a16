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
    return DeploymentRecord(env=env, target="local", url="http://127.0.0.1:1", model_ref=ref, model_name="iris",
                            model_version="1", model_sha256="a" * 64, bundle_digest="b" * 64, bundle_path="/x",
                            schema={}, revision=1)


def test_a_failed_write_back_is_kept_in_state_and_does_not_raise(settings, monkeypatch, capsys):
    state = State()
    state.deployments["prod"] = deployment("prod", "clearml:abc")
    state.save(settings.workdir)
    monkeypatch.setattr(audit, "get_source", lambda scheme, s: UnreachableSource())
    record = audit.record_deployment(settings, "prod")
    assert record is not None and not record.written_back
    assert "not written to clearml:abc: ClearML server http://127.0.0.1:9 is unreachable" in record.detail
    saved = State.load(settings.workdir).audit
    assert [(a.env, a.model_ref, a.tag, a.digest) for a in saved] == [("prod", "clearml:abc", "deployed:prod", "unknown")]
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
