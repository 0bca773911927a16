"""Who asked and who approved: in the audit record, the model's metadata in its source, and state.approvals."""

from __future__ import annotations

from mlops_cli import audit
from mlops_cli.audit import Who
from mlops_cli.state import DeploymentRecord, State


class MetadataSource:
    """Keeps what the audit writes back, as ClearML's model metadata would."""

    def __init__(self):
        self.metadata: dict[str, str] = {}

    def write_back(self, ref, *, add_tags, remove_tags, metadata):
        self.metadata.update(metadata)
        return True

    def tagged(self, tag):
        return []


def test_the_approver_and_the_requester_are_written_beside_the_digest(settings, monkeypatch):
    state = State()
    state.deployments["prod"] = DeploymentRecord(
        env="prod",
        target="local",
        url="http://127.0.0.1:1",
        model_ref="clearml:abc",
        model_name="iris",
        model_version="1",
        model_sha256="a" * 64,
        bundle_digest="b" * 64,
        bundle_path="/x",
        schema={},
        revision=1,
    )
    state.save(settings.workdir)
    source = MetadataSource()
    monkeypatch.setattr(audit, "get_source", lambda scheme, s: source)
    who = Who(
        triggered_by="slack:U123 via chatops-bot",
        approved_by="slack:U456 via chatops-bot",
        build_url="https://jenkins.example/job/r/7/",
    )
    record = audit.record_deployment(settings, "prod", who)
    assert (record.triggered_by, record.approved_by, record.build_url) == (
        "slack:U123 via chatops-bot",
        "slack:U456 via chatops-bot",
        "https://jenkins.example/job/r/7/",
    )
    assert source.metadata["mlops.deployed.prod.approved_by"] == "slack:U456 via chatops-bot"
    assert source.metadata["mlops.deployed.prod.triggered_by"] == "slack:U123 via chatops-bot"
    assert source.metadata["mlops.deployed.prod.build_url"] == "https://jenkins.example/job/r/7/"
    assert source.metadata["mlops.deployed.prod.digest"] == "unknown"  # no bundle in this state
    assert State.load(settings.workdir).audit[-1].approved_by == "slack:U456 via chatops-bot"


def test_a_deployment_without_a_gate_records_no_approver(settings, monkeypatch):
    state = State()
    state.deployments["test"] = DeploymentRecord(
        env="test",
        target="local",
        url="http://127.0.0.1:1",
        model_ref="local:iris@1",
        model_name="iris",
        model_version="1",
        model_sha256="a" * 64,
        bundle_digest="b" * 64,
        bundle_path="/x",
        schema={},
        revision=1,
    )
    state.save(settings.workdir)
    source = MetadataSource()
    monkeypatch.setattr(audit, "get_source", lambda scheme, s: source)
    record = audit.record_deployment(settings, "test")
    assert record.approved_by is None and not any(k.endswith("approved_by") for k in source.metadata)


def test_rejections_and_timeouts_are_kept_bounded(settings, monkeypatch):
    monkeypatch.setenv("BUILD_URL", "https://jenkins.example/job/r/8/")
    for _ in range(audit.HISTORY + 3):
        result = audit.record_approval_result(settings, "timed-out", "", "jenkins:bob")
    approvals = State.load(settings.workdir).approvals
    assert len(approvals) == audit.HISTORY
    assert (approvals[-1].decision, approvals[-1].by, approvals[-1].triggered_by, approvals[-1].build_url) == (
        "timed-out",
        None,
        "jenkins:bob",
        "https://jenkins.example/job/r/8/",
    )
    assert result.lines() == ["approval timed-out for the model: not deployed"]
