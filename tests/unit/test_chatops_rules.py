"""chatops without servers: command words, the request guard on a controlled clock, roles, the approval
button's checks, configuration errors, and the OpenShift manifests under deploy/openshift/chatops/."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO, require_module

from mlops_cli.chatops.auth import Authoriser
from mlops_cli.chatops.commands import Command, parse
from mlops_cli.chatops.guard import RequestGuard
from mlops_cli.config import load_settings
from mlops_cli.errors import ConfigError, UsageError

SECRET = "unit-signing-secret"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", Command("help")),
        ("help", Command("help")),
        ("deploy local:iris@3", Command("deploy", model="local:iris@3", env="prod")),
        ("deploy clearml:abc123 to test", Command("deploy", model="clearml:abc123", env="test")),
        (
            "deploy <s3://models/iris/v3> to prod kubernetes",
            Command("deploy", model="s3://models/iris/v3", env="prod", target="kubernetes"),
        ),
        ("deploy local:iris container", Command("deploy", model="local:iris", env="prod", target="container")),
        ("status", Command("status")),
        ("status test", Command("status", env="test")),
        ("rollback prod", Command("rollback", env="prod")),
        ("models iris", Command("models", name="iris")),
    ],
)
def test_commands_parse(text, expected):
    assert parse(text, "prod") == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("deploy", "usage: deploy MODEL_REF"),
        ("deploy iris", "has no scheme"),
        ("deploy local:iris to staging", "after `to` comes test or prod"),
        ("deploy local:iris to prod mainframe", "the target is one of local, container, kubernetes"),
        ("rollback", "usage: rollback prod"),
        ("status everywhere", "usage: status [test|prod]"),
        ("models ../../etc", "usage: models [NAME]"),
        ("models iris/../../x", "usage: models [NAME]"),
        ("launch", "unknown command 'launch'"),
    ],
)
def test_bad_commands_are_one_line_usage_errors(text, message):
    with pytest.raises(UsageError) as err:
        parse(text, "prod")
    assert message in str(err.value) and "\n" not in str(err.value)


def signed(body: bytes, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    from slack_sdk.signature import SignatureVerifier

    return {
        "x-slack-request-timestamp": str(timestamp),
        "x-slack-signature": SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body),
    }


def test_the_guard_checks_signature_age_replay_and_forgets_after_the_window():
    clock = [1_800_000_000.0]
    guard = RequestGuard(SECRET, now=lambda: clock[0])
    body = b"command=%2Fmlops&text=deploy+local%3Airis"
    headers = signed(body, int(clock[0]))
    assert guard.check(body, headers) == "ok"
    assert guard.check(body, headers) == "replayed"
    assert guard.check(body, {**headers, "x-slack-retry-num": "1"}) == "retry"
    assert guard.check(body + b"x", headers) == "forged"
    assert guard.check(body, signed(body, int(clock[0]), "other-secret")) == "forged"
    assert guard.check(body, {"x-slack-request-timestamp": "soon", "x-slack-signature": "v0=00"}) == "forged"
    assert guard.check(body, {}) == "unsigned"
    assert guard.check(body, signed(body, int(clock[0]) - 301)) == "stale"
    assert guard.check(body, signed(body, int(clock[0]) - 299)) == "ok"
    clock[0] += 301  # the first request is now stale: its replay is refused by age, and it is forgotten
    assert guard.check(body, headers) == "stale"
    assert guard.first_time("t1") and not guard.first_time("t1") and guard.first_time(None)


def test_a_request_stamped_ahead_of_our_clock_cannot_be_replayed_once_its_first_arrival_is_old():
    """Slack's clock ahead of ours by 290 s: the request stays within the window for ~590 s after it
    arrives, so its signature must be remembered at least that long."""
    clock = [1_800_000_000.0]
    guard = RequestGuard(SECRET, now=lambda: clock[0])
    body = b"command=%2Fmlops&text=deploy+local%3Airis"
    headers = signed(body, int(clock[0]) + 290)
    assert guard.check(body, headers) == "ok"
    clock[0] += 400  # still within 5 minutes of the request's timestamp
    assert guard.check(body, headers) == "replayed"
    assert guard.check(body, {**headers, "x-slack-retry-num": "1"}) == "retry"
    guard.first_time("trigger-ahead")
    clock[0] += 180
    assert guard.check(body, headers) == "replayed" and not guard.first_time("trigger-ahead")
    clock[0] += 20  # now more than 5 minutes after the timestamp: stale
    assert guard.check(body, headers) == "stale"


def test_roles_groups_team_channel_and_four_eyes():
    auth = Authoriser({"U1": ["deployer"], "U2": ["approver"]}, {"S1": ["approver"]}, "T1", ["C1"], four_eyes=True)
    auth.refresh(lambda group: ["U1"])
    assert auth.roles("U1") == {"deployer", "approver", "viewer"}
    assert auth.roles("U9") == set()
    assert auth.where("T1", "C1") is None
    assert auth.where("T2", "C1").reason == "other-team" and auth.where("T1", "C2").reason == "other-channel"
    assert auth.allow("U2", "viewer", "x") is None and auth.allow("U9", "viewer", "x").reason == "unauthorised"
    assert auth.may_approve("U1", "slack:U1").reason == "own-release"
    assert auth.may_approve("U1", "slack:U2") is None
    assert auth.may_approve("U1", "jenkins:pm") is None
    no_four_eyes = Authoriser({"U1": ["approver"]}, {}, None, [], four_eyes=False)
    assert no_four_eyes.may_approve("U1", "slack:U1") is None and no_four_eyes.where("T9", "C9") is None

    def down(group: str) -> list[str]:
        raise OSError("unreachable")

    auth.refresh(down)  # Slack unreachable: the last known members keep their roles
    assert "approver" in auth.roles("U1")


def jenkins_executor(**jenkins):
    from mlops_cli.chatops.executors.jenkins import JenkinsExecutor

    section = {"url": "https://jenkins.example.com/ci", "user": "bot", "api_token": "t0ken", **jenkins}
    return JenkinsExecutor(load_settings(None, {"chatops": {"jenkins": section}}, environ={}))


def test_the_approval_button_must_name_the_release_job_on_the_configured_jenkins():
    from mlops_cli.chatops.executors import ExecutorError

    executor = jenkins_executor(job="ml/mlops-release")
    good = {
        "job": "ml/mlops-release",
        "build": 7,
        "build_url": "https://jenkins.example.com/ci/job/ml/job/mlops-release/7/",
        "input_id": "ReleaseApproval",
        "requested_by": "slack:U1",
        "model": "local:iris@3",
        "digest": "sha256:ab",
    }
    approval = executor.approval(json.dumps(good))
    assert approval.build == 7 and approval.key == "ml/mlops-release#7" and approval.requested_by == "slack:U1"
    for change, message in [
        ({"job": "other"}, "not the release job"),
        ({"build": "7"}, "no build number"),
        ({"build": True}, "no build number"),
        ({"input_id": "Other"}, "not 'ReleaseApproval'"),
        ({"build_url": "https://evil.example/ci/job/ml/job/mlops-release/7/"}, "build URL is not"),
        ({"build_url": "https://jenkins.example.com/ci/job/ml/job/mlops-release/8/"}, "build URL is not"),
        ({"requested_by": None}, "incomplete"),
    ]:
        with pytest.raises(ExecutorError, match=message):
            executor.approval(json.dumps({**good, **change}))
    for value in ("", "[1]", "not json"):
        with pytest.raises(ExecutorError, match="no release data"):
            executor.approval(value)


@pytest.mark.parametrize(
    "chatops, message",
    [
        ({}, "needs the Slack app's signing secret"),
        ({"signing_secret": "s"}, "needs the Slack app's bot token"),
        ({"signing_secret": "s", "bot_token": "xoxb-1"}, "gives nobody a role"),
        ({"signing_secret": "s", "bot_token": "xoxb-1", "users": {"U1": ["viewer"]}}, "needs chatops.jenkins.url"),
        (
            {
                "signing_secret": "s",
                "bot_token": "xoxb-1",
                "users": {"U1": ["viewer"]},
                "jenkins": {"url": "https://j.example/"},
            },
            "needs chatops.jenkins.user and its API token",
        ),
        (
            {
                "signing_secret": "s",
                "bot_token": "xoxb-1",
                "users": {"U1": ["viewer"]},
                "executor": "local",
                "tls_cert_file": "/nonexistent/cert.pem",
                "tls_key_file": "/nonexistent/key.pem",
            },
            "does not exist",
        ),
    ],
)
def test_configuration_errors_are_one_line(tmp_path, chatops, message):
    from mlops_cli.chatops import build

    with pytest.raises(ConfigError, match=message):
        build(load_settings(None, {"workdir": tmp_path, "chatops": chatops}, environ={}))


def test_an_unknown_role_is_a_config_error():
    with pytest.raises(ConfigError, match="chatops.users.U1"):
        load_settings(None, {"chatops": {"users": {"U1": ["admin"]}}}, environ={})


def test_secrets_come_from_the_environment_or_files_and_never_print(tmp_path):
    (tmp_path / "bot").write_text("xoxb-from-file\n")
    settings = load_settings(
        None,
        {"chatops": {"bot_token_file": str(tmp_path / "bot")}},
        environ={"MLOPS_CHATOPS__SIGNING_SECRET": "from-env"},
    )
    assert settings.chatops.signing_secret_value() == "from-env"
    assert settings.chatops.bot_token_value() == "xoxb-from-file"
    assert "from-env" not in repr(settings.chatops) and "from-env" not in settings.model_dump_json()


def test_the_openshift_manifests_are_valid_and_their_config_loads():
    require_module("kubernetes_validate", "validates the manifests")
    from mlops_cli.render import validate

    folder = REPO / "deploy" / "openshift" / "chatops"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = [yaml.safe_load((folder / name).read_text()) for name in kustomization["resources"]]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Route", "Secret", "Service"]
    validate(docs, "1.30")  # strict schemas; the Route against the project's own schema
    by_kind = {d["kind"]: d for d in docs}
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["mlops.yaml"])
    settings = load_settings(None, config, environ={})
    mounted = Path("/var/run/secrets/mlops-chatops")
    files = {
        settings.chatops.signing_secret_file,
        settings.chatops.bot_token_file,
        settings.chatops.jenkins.api_token_file,
    }
    assert files == {mounted / key for key in by_kind["Secret"]["stringData"]}
    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == settings.chatops.port and settings.chatops.host == "0.0.0.0"
    assert {p["httpGet"]["path"] for p in (container["readinessProbe"], container["livenessProbe"])} == {
        "/health/ready",
        "/health/live",
    }
    assert by_kind["Deployment"]["spec"]["replicas"] == 1  # replay memory is per process
    assert by_kind["Route"]["spec"]["path"] == "/slack"  # /metrics and /health are not on the internet
    assert kustomization["images"][0]["digest"].startswith("sha256:")


@pytest.mark.parametrize("prefix", ["https://hooks.slack.com/", "https://hooks.slack.com"])
@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://hooks.slack.com/commands/T1/123/abc", True),
        ("https://hooks.slack.com/actions/T1/123/abc", True),
        ("https://hooks.slack.com.evil.example/commands/T1/123/abc", False),
        ("https://hooks.slack.com@evil.example/commands/T1/123/abc", False),
        ("https://user:pw@hooks.slack.com/commands/T1/123/abc", False),
        ("http://hooks.slack.com/commands/T1/123/abc", False),
        ("https://hooks.slack.com:8443/commands/T1/123/abc", False),
        ("https://evil.example/https://hooks.slack.com/", False),
        ("https://hooks.slack.com\\@evil.example/", False),
        ("not a url", False),
    ],
)
def test_a_response_url_is_answered_only_under_slacks_host(prefix, url, allowed):
    """A response_url outside the prefix's scheme, host and port is never contacted (no SSRF), even when
    the configured prefix lacks its final slash."""
    from mlops_cli.chatops.slack import ReplyError, Slack, under_prefix

    assert under_prefix(url, prefix) is allowed
    if not allowed:
        with pytest.raises(ReplyError, match="not under chatops.response_url_prefix"):
            Slack("xoxb-unit", "https://slack.com/api/", prefix).respond(url, "hello")


def test_a_response_url_prefix_with_a_path_keeps_replies_under_that_path():
    from mlops_cli.chatops.slack import under_prefix

    prefix = "http://127.0.0.1:8099/response/"
    assert under_prefix("http://127.0.0.1:8099/response/abc", prefix)
    assert not under_prefix("http://127.0.0.1:8099/responses-elsewhere/abc", prefix)
    assert not under_prefix("http://127.0.0.1:8099/response/../admin", prefix)
    assert not under_prefix("http://127.0.0.1:8100/response/abc", prefix)


def test_decided_approvals_are_remembered_once_each_and_bounded():
    from mlops_cli.chatops.guard import Decisions

    decisions = Decisions(max_items=3)
    assert decisions.claim("mlops-release#1") and not decisions.claim("mlops-release#1")
    decisions.release("mlops-release#1")  # Jenkins did not take the answer: it may be decided again
    assert decisions.claim("mlops-release#1")
    for number in range(2, 1002):
        assert decisions.claim(f"mlops-release#{number}")
    assert len(decisions) == 3  # a service running for months does not grow with every release
    assert not decisions.claim("mlops-release#1001") and decisions.claim("mlops-release#1")


def test_request_checks_are_not_asserts():
    """`python -O` drops assert statements: a check on what Slack sent must be an if."""
    import ast

    found = [
        f"{path.name}:{node.lineno}"
        for path in sorted((REPO / "mlops_cli" / "chatops").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert found == []


def test_the_jenkins_url_carries_no_credentials():
    """A user:token in chatops.jenkins.url would reach the thread in 'Jenkins at <url> is unreachable'."""
    with pytest.raises(ConfigError, match="needs chatops.jenkins.url, an http\\(s\\) URL"):
        jenkins_executor(url="https://bot:t0ken@jenkins.example.com/")


def test_a_job_name_with_spaces_matches_jenkins_percent_encoded_build_url():
    executor = jenkins_executor(job="ml team/mlops release")
    value = {
        "job": "ml team/mlops release",
        "build": 3,
        "input_id": "ReleaseApproval",
        "requested_by": "slack:U1",
        "build_url": "https://jenkins.example.com/ci/job/ml%20team/job/mlops%20release/3/",
    }  # Jenkins' BUILD_URL
    assert executor.approval(json.dumps(value)).build_url == value["build_url"]


def test_the_local_executor_runs_one_release_at_a_time_per_workdir(tmp_path, monkeypatch):
    """Two releases asked at once on one workdir: the second waits for the first (the flock), says so, and
    no two stages ever overlap; another workdir is not held up."""
    import threading
    import time

    from mlops_cli.chatops.executors import Release
    from mlops_cli.chatops.executors.local import LocalExecutor

    spans: list[tuple[str, float, float]] = []

    def fake_mlops(self, args, release):  # a stage as a process would take: some time, then exit 0
        start = time.monotonic()
        time.sleep(0.05)
        spans.append((str(self.workdir), start, time.monotonic()))
        return 0, json.dumps({"status": "passed"}), ""

    monkeypatch.setattr(LocalExecutor, "_mlops", fake_mlops)
    monkeypatch.setattr(LocalExecutor, "_serving", lambda self, env: "done")

    def executor(workdir: Path) -> LocalExecutor:
        return LocalExecutor(load_settings(None, {"workdir": workdir, "chatops": {"executor": "local"}}, environ={}))

    said: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    runs = [(executor(tmp_path / "one"), "a"), (executor(tmp_path / "one"), "b"), (executor(tmp_path / "two"), "c")]
    threads = [
        threading.Thread(
            target=ex.deploy, args=(Release("local:iris@1", "test", None, "U1", "C1", "1.0"), said[name].append)
        )
        for ex, name in runs
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=30)
    one = sorted((s, e) for w, s, e in spans if w.endswith("one"))
    assert len(one) == 2 * 6 and all(a[1] <= b[0] for a, b in itertools.pairwise(one))  # never two at once
    assert any("another release runs" in line for line in said["b"]) and said["b"][-1] == "done"
    assert not any("another release runs" in line for line in said["c"])


def test_group_members_are_replaced_at_once_not_while_requests_read_them():
    """refresh runs in a thread; roles() iterates the members on the loop: no dict may grow under it."""
    auth = Authoriser({}, {"S1": ["deployer"], "S2": ["approver"]}, None, [], four_eyes=True)
    seen = []

    def members(group: str) -> list[str]:
        seen.append((group, dict(auth.members), auth.roles("U1")))  # what a request would see meanwhile
        return ["U1"]

    auth.refresh(members)
    assert seen == [("S1", {}, set()), ("S2", {}, set())]
    assert auth.roles("U1") == {"deployer", "approver", "viewer"}


def test_the_audit_log_is_read_from_its_tail_in_bounded_time(tmp_path):
    from mlops_cli.chatops.audit import AuditLog

    audit = AuditLog(tmp_path / "audit.jsonl")
    with open(audit.path, "w") as f:
        for i in range(30_000):  # months of refusals and releases: ~3 MB
            f.write(
                json.dumps(
                    {
                        "at": "2026-01-01T00:00:00Z",
                        "event": "refused",
                        "reason": "unauthorised",
                        "user": f"U{i}",
                        "command": "/mlops deploy local:iris@3",
                    }
                )
                + "\n"
            )
    audit.record("released", user="U_DEP", env="prod", model="local:iris@3")
    entries = audit.entries(tail_bytes=64 * 1024)
    assert 0 < len(entries) < 1000 and entries[-1]["event"] == "released"
    assert all(isinstance(e, dict) and "event" in e for e in entries)


def _local_gate(monkeypatch, tmp_path: Path, **local):
    """A LocalExecutor whose stage processes are recorded (argv) and pass at once."""
    from mlops_cli.chatops.executors.local import LocalExecutor

    calls: list[list[str]] = []

    def fake_mlops(self, args, release):
        calls.append(list(args))
        return 0, json.dumps({"status": "passed"}), ""

    monkeypatch.setattr(LocalExecutor, "_mlops", fake_mlops)
    monkeypatch.setattr(LocalExecutor, "_serving", lambda self, env: "done")
    settings = load_settings(None, {"workdir": tmp_path, "chatops": {"executor": "local", "local": local}}, environ={})
    return LocalExecutor(settings), calls


def test_the_local_approval_gate_switched_off_runs_all_seven_stages_and_says_so(monkeypatch, tmp_path):
    from mlops_cli.chatops.executors import Release

    executor, calls = _local_gate(monkeypatch, tmp_path, approval_gate=False)
    said: list[str] = []
    executor.deploy(
        Release("local:iris@1", "prod", None, "U1", "C1", "1.0"), lambda text, blocks=None: said.append(text)
    )
    assert [c[0] for c in calls][-1] == "rolling-update" and len(calls) == 7
    assert calls[-1] == ["rolling-update", "--triggered-by", "slack:U1"]  # no approver: approval.required refuses
    assert said[0].startswith(":warning: no approval gate") and said[-1] == "done"


def test_the_local_approval_gate_answers_only_its_waiting_release_and_once(monkeypatch, tmp_path):
    import threading
    import time

    from mlops_cli.chatops.executors import ExecutorError, Release

    executor, calls = _local_gate(monkeypatch, tmp_path, approval_timeout_s=30)
    posted: list[tuple[str, list | None]] = []
    release = Release("local:iris@1", "prod", None, "U1", "C1", "1.0")
    thread = threading.Thread(
        target=executor.deploy, args=(release, lambda text, blocks=None: posted.append((text, blocks)))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not any(b for _, b in posted):
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        value = next(b for _, b in posted if b)[-1]["elements"][0]["value"]
        data = json.loads(value)
        assert [c[0] for c in calls] == ["unit-test", "validate-model", "assemble-server", "build-image",
                                         "deploy-test", "smoke-test"]  # fmt: skip
        for forged in ({**data, "job": "mlops-release"}, {**data, "input_id": "0" * 16}, {**data, "build": 99}):
            with pytest.raises(ExecutorError):
                executor.approval(json.dumps(forged))
        with pytest.raises(ExecutorError):
            executor.approval("not json")
        approval = executor.approval(json.dumps({**data, "requested_by": "slack:U_OTHER"}))
        assert executor.requester(approval) == "slack:U1"  # the service's record, not the button's word
        executor.decide(approval, True, "U2")
        with pytest.raises(ExecutorError, match="decided already|not waiting"):
            executor.decide(approval, False, "U3")
        thread.join(timeout=10)
        assert calls[-1] == ["rolling-update", "--approved-by", "slack:U2", "--triggered-by", "slack:U1"]
        with pytest.raises(ExecutorError, match="not waiting for approval"):
            executor.approval(value)
    finally:
        executor.close()
        thread.join(timeout=10)
