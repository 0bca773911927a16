"""The real Jenkinsfile, evaluated by a real Groovy interpreter against a STAND-IN of Jenkins'
declarative DSL (tests/jenkins/standin/JenkinsStandIn.groovy; not Jenkins): every stage runs its
real `mlops` command in a workspace with the environment Jenkins would give it (WORKSPACE, BUILD_URL,
JOB_NAME, BUILD_NUMBER, parameters, bound credentials), the `input` step's answer (approve, reject,
timeout) decides whether rolling-update runs, and `post` sends the outcome: to a Slack Web API
double (tests/doubles/slack_api.py) and a Kafka broker double (tests/kafka_double.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from doubles.slack_api import SlackWebAPIDouble
from helpers import REPO, free_port, read_state, register_iris, require_tool, run_cli
from kafka_double import KafkaBrokerDouble

pytestmark = pytest.mark.integration

JENKINS = REPO / "tests" / "jenkins"
XSD = REPO / "tests" / "fixtures" / "junit" / "junit.xsd"
TOKEN = "xoxb-test-token"
CHANNEL = "C0RELEASES"
THREAD = "1699999999.000100"
BUILD_URL = "https://jenkins.example/job/mlops-release/7/"
SECRETS = ("regpass-5e1c", "clustertok-77ab", "clearmlsecret-90fe", "s3secret-3c2d")
ALL_CREDENTIALS = {
    "mlops-slack-bot-token": {"type": "secret", "secret": TOKEN},
    "mlops-registry": {"type": "usernamePassword", "username": "ci", "password": SECRETS[0]},
    "mlops-cluster-token": {"type": "secret", "secret": SECRETS[1]},
    "mlops-clearml": {"type": "usernamePassword", "username": "clearml-access", "password": SECRETS[2]},
    "mlops-s3": {"type": "usernamePassword", "username": "s3-access", "password": SECRETS[3]},
}
STAGES = [
    "start",
    "unit-test",
    "validate-model",
    "assemble-server",
    "build-image",
    "deploy-test",
    "smoke-test",
    "approval",
    "rolling-update",
]
TOPIC = "mlops.releases"


def java_env() -> dict[str, str]:
    """Debian's groovy script needs JAVA_HOME when /usr/lib/jvm/default-java is missing."""
    if Path("/usr/lib/jvm/default-java/bin/java").exists() or os.environ.get("JAVA_HOME"):
        return {}
    java = shutil.which("java")
    return {"JAVA_HOME": str(Path(java).resolve().parents[1])} if java else {}


def groovy(*args: str, timeout: float = 900, tool: str = "groovy") -> subprocess.CompletedProcess:
    require_tool(tool)
    require_tool("java")
    return subprocess.run(
        [shutil.which(tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **java_env()},
        check=False,
    )


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    """The stand-in's classes, compiled with groovyc (its nested classes resolve only when compiled)."""
    out = tmp_path_factory.mktemp("standin-classes")
    sources = sorted(str(p) for p in (JENKINS / "standin").rglob("*.groovy"))
    done = groovy("-d", str(out), *sources, timeout=300, tool="groovyc")
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def kafka():
    double = KafkaBrokerDouble().start()
    yield double
    double.stop()


@pytest.fixture
def slack():
    double = SlackWebAPIDouble(token=TOKEN, channels=(CHANNEL,))
    yield double
    double.close()


class Workspace:
    """A Jenkins workspace with mlops.yaml and a model store; `build(...)` runs the Jenkinsfile in it."""

    def __init__(
        self,
        root: Path,
        slack: SlackWebAPIDouble,
        kafka: KafkaBrokerDouble,
        make_settings: Any,
        artifact: Path,
        standin: Path,
    ):
        self.root = root
        self.standin = standin
        self.workdir = root / ".mlops"
        root.mkdir(parents=True)
        self.config = {
            "store": {"path": str(root / "store")},
            "deploy": {"target": "local", "test": {"port": free_port()}, "prod": {"port": free_port()}},
            "validation": {"thresholds": {"accuracy": ">= 0.9"}},
            "smoke": {"requests": 5},
            "notify": {
                "notifiers": ["kafka"],
                "retries": 0,
                "slack": {"api_url": slack.api_url, "timeout_s": 5},
                "kafka": {"bootstrap_servers": [kafka.bootstrap], "topic": TOPIC, "timeout_s": 5},
            },
        }
        (root / "mlops.yaml").write_text(yaml.safe_dump(self.config))
        self.settings = make_settings(workdir=self.workdir, store={"path": str(root / "store")})
        self.artifact = artifact

    def register(self, **overrides: Any) -> str:
        return register_iris(self.settings, self.artifact, **overrides)

    def build(
        self,
        tmp_path: Path,
        params: dict[str, str],
        answer: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        credentials: dict[str, Any] | None = None,
        jenkinsfile: Path = REPO / "Jenkinsfile",
        artifacts: dict[str, str] | None = None,
        declare_only: bool = False,
    ) -> Build:
        base_env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "WORKSPACE": str(self.root),
            "BUILD_URL": BUILD_URL,
            "BUILD_NUMBER": "7",
            "JOB_NAME": "mlops-release",
            "BUILD_TAG": "jenkins-mlops-release-7",
            "JENKINS_URL": "https://jenkins.example/",
            "NODE_NAME": "mlops-agent-x1",
            "RELEASE_APPROVERS": "release-managers",
            "RELEASE_CREDENTIALS": "slack-bot",
            **(env or {}),
        }
        scenario = {
            "jenkinsfile": str(jenkinsfile),
            "env": base_env,
            "params": params,
            "artifacts": artifacts or {},
            "input": answer or {"answer": "none"},
            "credentials": credentials
            if credentials is not None
            else {"mlops-slack-bot-token": {"type": "secret", "secret": TOKEN}},
            "causes": [{"_class": "hudson.model.Cause$UserIdCause", "userId": "chatops-bot"}],
            "sh_timeout_s": 300,
            "declare_only": declare_only,
        }
        (tmp_path / "scenario.json").write_text(json.dumps(scenario))
        done = groovy(
            "-cp",
            str(self.standin),
            str(JENKINS / "run_jenkinsfile.groovy"),
            str(tmp_path / "scenario.json"),
            str(tmp_path / "events.json"),
        )
        assert (tmp_path / "events.json").exists(), done.stdout[-3000:] + done.stderr[-3000:]
        return Build(json.loads((tmp_path / "events.json").read_text()), done)

    def stop(self) -> None:
        if (self.workdir / "state.json").exists():
            run_cli("stop", "--workdir", str(self.workdir), cwd=self.root, timeout=60)


class Build:
    def __init__(self, data: dict[str, Any], done: subprocess.CompletedProcess):
        self.events = data["events"]
        self.params = data["params"]
        self.log = done.stdout + done.stderr
        assert data["crashed"] is None, self.log[-4000:]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def result(self) -> str:
        return self.of("result")[-1]["result"]

    def stage_status(self) -> dict[str, str]:
        return {e["stage"]: e["status"] for e in self.of("stage")}

    def scripts(self, stage: str) -> list[str]:
        return [e["script"].strip() for e in self.of("sh") if e["stage"] == stage]

    def posts(self) -> list[str]:
        return [e["condition"] for e in self.of("post") if e["stage"] is None]


@pytest.fixture
def workspace(tmp_path, slack, kafka, make_settings, iris_artifact, standin):
    ws = Workspace(tmp_path / "workspace", slack, kafka, make_settings, iris_artifact, standin)
    yield ws
    ws.stop()


def kafka_events(kafka: KafkaBrokerDouble, build_url: str = BUILD_URL) -> list[dict[str, Any]]:
    """The release events (kind "release"; rolling-update's own rollout outcome goes there too)."""
    return [
        m.json()["event"]
        for m in kafka.topic(TOPIC)
        if m.json()["kind"] == "release" and m.json()["event"].get("build_url") == build_url
    ]


def slack_params(model: str) -> dict[str, str]:
    return {
        "MODEL_REF": model,
        "TARGET": "",
        "REQUESTED_BY": "slack:U123",
        "SLACK_CHANNEL": CHANNEL,
        "SLACK_THREAD_TS": THREAD,
    }


def validate_junit(*files: Path) -> None:
    done = groovy(str(JENKINS / "validate_xml.groovy"), str(XSD), *map(str, files), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == len(files)


def test_approved_release_runs_every_stage_and_records_who_asked_and_approved(workspace, slack, kafka, tmp_path):
    model = workspace.register()
    before = len(kafka.topic(TOPIC))
    # every credential kind bound, each secret a marker that must not reach the log, state, reports or messages
    build = workspace.build(
        tmp_path,
        slack_params(model),
        {"answer": "approve", "user": "chatops-bot", "values": {"SLACK_APPROVER": "slack:U456"}},
        env={"RELEASE_CREDENTIALS": "registry,cluster,clearml,s3,slack-bot"},
        credentials=ALL_CREDENTIALS,
    )
    assert build.result == "SUCCESS", build.log[-4000:]
    bound = {v for e in build.of("credentials") for v in e.get("bound", [])}
    assert {
        "MLOPS_BUILD__PASSWORD",
        "MLOPS_KUBERNETES__TOKEN",
        "MLOPS_CLEARML__SECRET_KEY",
        "MLOPS_S3__SECRET_ACCESS_KEY",
        "MLOPS_NOTIFY__SLACK__BOT_TOKEN",
    } <= bound
    leaked = {secret for secret in (*SECRETS, TOKEN) if secret in build.log}
    for f in [*build.of("archive")[-1]["files"], ".mlops/reports/unit-test.xml", ".mlops/reports/smoke-test.xml"]:
        text = (workspace.root / f).read_text(errors="replace")
        leaked |= {secret for secret in (*SECRETS, TOKEN) if secret in text}
    sent = json.dumps(slack.messages) + json.dumps([m.json() for m in kafka.topic(TOPIC)])
    leaked |= {secret for secret in (*SECRETS, TOKEN) if secret in sent}
    assert not leaked
    assert build.stage_status() == {name: "SUCCESS" for name in STAGES}
    assert [e["stage"] for e in build.of("stage")] == STAGES
    # one mlops call per stage, as Jenkins would run it
    for name in STAGES[1:7]:
        assert build.scripts(name) == [
            f'mlops {name} --model "$MODEL_REF"' if name == "validate-model" else f"mlops {name}"
        ]
    assert build.scripts("rolling-update") == [
        'mlops rolling-update --approved-by "$APPROVED_BY" --triggered-by "$TRIGGERED_BY"'
    ]
    (gate,) = build.of("input")
    assert gate["id"] == "ReleaseApproval" and gate["submitter"] == "release-managers"
    assert gate["submitterParameter"] == "APPROVER" and gate["parameters"] == ["SLACK_APPROVER"]
    assert build.of("pipeline")[0]["options"] == [
        "buildDiscarder",
        "copyArtifactPermission",
        "disableConcurrentBuilds",
        "timeout",
        "timestamps",
    ]

    state = read_state(workspace.workdir)
    (audit,) = [a for a in state["audit"] if a["env"] == "prod"]
    assert audit["model_ref"] == model and audit["digest"].startswith("bundle sha256:")
    assert audit["triggered_by"] == "slack:U123 via chatops-bot"
    assert audit["approved_by"] == "slack:U456 via chatops-bot"
    assert audit["build_url"] == BUILD_URL
    assert (
        state["approvals"][-1]["decision"] == "approved"
        and state["approvals"][-1]["by"] == "slack:U456 via chatops-bot"
    )
    assert state["deployments"]["prod"]["model_ref"] == model

    # Slack: every message in the requester's thread; the gate's message carries the approval buttons
    assert [m["thread_ts"] for m in slack.messages] == [THREAD] * 4
    started, gate_msg, approved, done = slack.messages
    assert "approved for production by slack:U456 via chatops-bot" in approved["text"]
    assert "started" in started["text"] and "released to production" in done["text"]
    (actions,) = [b for b in gate_msg["blocks"] if b.get("block_id") == "mlops_approval"]
    approve, reject = actions["elements"]
    assert (approve["action_id"], approve["style"], reject["action_id"], reject["style"]) == (
        "mlops_approve",
        "primary",
        "mlops_reject",
        "danger",
    )
    value = json.loads(approve["value"])
    assert value == {
        "job": "mlops-release",
        "build": 7,
        "build_url": BUILD_URL,
        "input_id": "ReleaseApproval",
        "requested_by": "slack:U123",
        "model": model,
        "digest": audit["digest"],
    }
    link = [el for b in done["blocks"] if b["type"] == "actions" for el in b["elements"]]
    assert link[0]["url"] == BUILD_URL
    facts = " ".join(f["text"] for b in done["blocks"] for f in b.get("fields", []))
    assert "slack:U456 via chatops-bot" in facts and "slack:U123 via chatops-bot" in facts and model in facts
    assert all(TOKEN not in e.get("output", "") for e in build.of("sh"))  # mlops never prints the bot token

    # Kafka: one JSON event per notification
    messages = [m.json() for m in kafka.topic(TOPIC)[before:]]
    assert [m["kind"] for m in messages] == ["release", "release", "release", "rolling-update", "release"]
    events = [m["event"] for m in messages if m["kind"] == "release"]
    assert [e["event"] for e in events] == ["started", "approval-requested", "approved", "success"]
    assert events[-1]["approved_by"] == "slack:U456 via chatops-bot" and events[-1]["digest"] == audit["digest"]

    # JUnit reports: one case per validation check, one per kind of smoke request and the latency budget
    junit = {e["stage"]: e["files"] for e in build.of("junit")}
    assert junit == {
        "unit-test": [".mlops/reports/unit-test.xml"],
        "validate-model": [".mlops/reports/validate-model.xml"],
        "smoke-test": [".mlops/reports/smoke-test.xml"],
    }
    reports = workspace.workdir / "reports"
    validate_junit(*(reports / f"{name}.xml" for name in ("unit-test", "validate-model", "smoke-test")))
    import xml.etree.ElementTree as ET

    checks = [c["name"] for c in state["validation"]["checks"]]
    assert [c.get("name") for c in ET.parse(reports / "validate-model.xml").iter("testcase")] == checks
    smoke_cases = [c.get("name") for c in ET.parse(reports / "smoke-test.xml").iter("testcase")]
    assert smoke_cases[0] == "example requests" and smoke_cases[-1] == "latency budget"
    assert "invalid request: malformed JSON" in smoke_cases
    archived = build.of("archive")[-1]["files"]
    assert ".mlops/state.json" in archived and ".mlops/reports/validate-model.xml" in archived
    assert any(f.endswith("/spec.json") for f in archived)


def test_a_rejection_deploys_nothing_and_says_who_rejected(workspace, slack, kafka, tmp_path):
    model = workspace.register()
    build = workspace.build(tmp_path, slack_params(model), {"answer": "reject", "user": "bob"})
    assert build.result == "ABORTED"
    status = build.stage_status()
    assert status["approval"] == "ABORTED" and status["smoke-test"] == "SUCCESS"
    assert status["rolling-update"].startswith("skipped")
    assert not any("rolling-update" in s for s in build.scripts("rolling-update"))
    assert build.posts() == ["always", "aborted"]
    state = read_state(workspace.workdir)
    assert "prod" not in state["deployments"] and not [a for a in state["audit"] if a["env"] == "prod"]
    rejected = state["approvals"][-1]
    assert (rejected["decision"], rejected["by"], rejected["model_ref"]) == ("rejected", "bob", model)
    assert rejected["triggered_by"] == "slack:U123 via chatops-bot" and rejected["build_url"] == BUILD_URL
    last = slack.messages[-1]
    assert last["thread_ts"] == THREAD and "rejected by bob" in last["text"]
    assert kafka_events(kafka)[-1]["event"] == "rejected" and kafka_events(kafka)[-1]["rejected_by"] == "bob"


def test_no_answer_in_time_deploys_nothing_and_is_recorded_as_a_timeout(workspace, slack, kafka, tmp_path):
    model = workspace.register()
    build = workspace.build(
        tmp_path, slack_params(model), {"answer": "timeout"}, env={"RELEASE_APPROVAL_MINUTES": "30"}
    )
    assert build.result == "ABORTED"
    assert build.stage_status()["rolling-update"].startswith("skipped")
    state = read_state(workspace.workdir)
    timed_out = state["approvals"][-1]
    assert timed_out["decision"] == "timed-out" and timed_out["by"] is None and "prod" not in state["deployments"]
    last = slack.messages[-1]
    assert "aborted" in last["text"] and any(
        "nobody approved in time" in b.get("text", {}).get("text", "") for b in last["blocks"] if b["type"] == "section"
    )
    assert kafka_events(kafka)[-1]["event"] == "aborted"


def test_a_failing_stage_stops_the_build_and_is_named_with_its_reason(workspace, slack, kafka, tmp_path):
    model = workspace.register(metrics={"accuracy": 0.5})
    build = workspace.build(tmp_path, {"MODEL_REF": model})  # started in Jenkins by a person: no Slack
    assert build.result == "FAILURE"
    status = build.stage_status()
    assert status["validate-model"] == "FAILURE"
    assert all(status[s].startswith("skipped") for s in STAGES[3:])
    assert not build.of("input")
    assert build.posts() == ["always", "failure"]
    assert slack.messages == []
    event = kafka_events(kafka)[-1]
    assert event["event"] == "failure" and event["failed_stage"] == "validate-model"
    assert "accuracy = 0.5, needs >= 0.9" in event["reason"] and event["triggered_by"] == "chatops-bot"
    report = workspace.workdir / "reports" / "validate-model.xml"
    validate_junit(report)
    assert "<failure" in report.read_text()


def test_a_missing_credential_fails_its_stage_naming_the_id(workspace, slack, kafka, tmp_path):
    model = workspace.register()
    build = workspace.build(tmp_path, {"MODEL_REF": model}, env={"RELEASE_CREDENTIALS": "slack-bot,registry"})
    assert build.result == "FAILURE"
    assert build.stage_status()["build-image"] == "FAILURE"
    (stage,) = [e for e in build.of("stage") if e["stage"] == "build-image"]
    assert stage["error"] == "Could not find credentials entry with ID 'mlops-registry'"
    event = kafka_events(kafka)[-1]
    assert event["event"] == "failure" and "outside the mlops stages" in event["reason"]


def test_the_gate_is_skipped_only_by_configuration(workspace, slack, kafka, tmp_path):
    model = workspace.register()
    # no build parameter can skip it: none of them is about approval
    build = workspace.build(tmp_path, {"MODEL_REF": model}, env={"MLOPS_APPROVAL__REQUIRED": "false"})
    assert build.result == "SUCCESS", build.log[-3000:]
    assert not any("APPROV" in name or "SKIP" in name for name in build.params)
    assert build.stage_status()["approval"] == "skipped (when)" and not build.of("input")
    audit = [a for a in read_state(workspace.workdir)["audit"] if a["env"] == "prod"][-1]
    assert audit["approved_by"] is None and audit["triggered_by"] == "chatops-bot"


def test_rolling_update_refuses_to_run_without_an_approver_when_one_is_required(tmp_path):
    done = run_cli(
        "rolling-update", "--workdir", str(tmp_path / "w"), cwd=tmp_path, env={"MLOPS_APPROVAL__REQUIRED": "true"}
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: production needs an approver: approval.required is on (pass --approved-by WHO after the approval "
        "gate, or set approval.required false)"
    ]


ROLLBACK = REPO / "deploy" / "jenkins" / "Jenkinsfile.rollback"


def dsl_parameters(job_dsl: Path) -> list[str]:
    import re

    return re.findall(r"^\s*(?:stringParam|choiceParam)\('([A-Z_]+)'", job_dsl.read_text(), re.M)


def test_the_jobs_take_the_parameters_the_slack_service_sends(workspace, tmp_path):
    """The chatops contract (mlops_cli/chatops/executors/jenkins.py): the release job takes PARAMETERS, the
    rollback job ENV, REQUESTED_BY, SLACK_CHANNEL, SLACK_THREAD_TS; the Job DSL declares the same as the
    Jenkinsfiles (the first build and the Slack trigger rely on them)."""
    from mlops_cli.chatops.executors import jenkins as chatops_jenkins

    names = {}
    for name, path in (("release", REPO / "Jenkinsfile"), ("rollback", ROLLBACK)):
        out = tmp_path / name
        out.mkdir()
        build = workspace.build(out, {}, jenkinsfile=path, declare_only=True)
        assert build.of("stage") == []
        names[name] = build.of("parameters")[0]["names"]
    assert set(chatops_jenkins.PARAMETERS) <= set(names["release"])
    sent = {"ENV", "REQUESTED_BY", "SLACK_CHANNEL", "SLACK_THREAD_TS"}
    assert sent <= set(names["rollback"])
    assert dsl_parameters(REPO / "deploy" / "jenkins" / "jobs" / "mlops_release.groovy") == names["release"]
    assert dsl_parameters(REPO / "deploy" / "jenkins" / "jobs" / "mlops_rollback.groovy") == names["rollback"]


def test_the_rollback_job_runs_mlops_rollback_with_the_release_jobs_state(
    workspace, slack, kafka, tmp_path, make_settings, iris_artifact, standin
):
    model = workspace.register()
    released = workspace.build(tmp_path, {"MODEL_REF": model}, env={"MLOPS_APPROVAL__REQUIRED": "false"})
    assert released.result == "SUCCESS", released.log[-3000:]
    assert ".mlops/state.json" in released.of("archive")[-1]["files"]

    rollback_ws = Workspace(tmp_path / "rollback-workspace", slack, kafka, make_settings, iris_artifact, standin)
    out = tmp_path / "rollback-build"
    out.mkdir()
    build = rollback_ws.build(
        out,
        {"ENV": "prod", "REQUESTED_BY": "slack:U123", "SLACK_CHANNEL": CHANNEL, "SLACK_THREAD_TS": THREAD},
        jenkinsfile=ROLLBACK,
        artifacts={"mlops-release": str(workspace.root)},
    )
    (copied,) = build.of("copyArtifacts")
    assert copied["projectName"] == "mlops-release" and copied["selector"] == {"selector": "lastSuccessful"}
    assert copied["files"] == [".mlops/state.json"]
    assert build.scripts("rollback") == ['mlops rollback --env "$ENV"']
    # the local target keeps no earlier revision: one line, and it knew what prod runs (the copied state)
    assert build.result == "FAILURE"
    (stage,) = build.of("stage")
    (sh,) = build.of("sh")
    assert stage["stage"] == "rollback" and stage["status"] == "FAILURE"
    assert sh["status"] != 0 and "the local target keeps no earlier revision to roll back to" in sh["output"]
    assert "nothing is deployed" not in sh["output"]


STRICT_CASES = {
    "an input parameter the input step lacks": "input(message: 'ok?', id: 'X', approvers: 'bob')",
    "an input without a message": "input(id: 'X')",
    "a username/password binding given a single variable": "withCredentials([usernamePassword(credentialsId: 'c', variable: 'V')]) { echo 'x' }",
    "a secret-text binding given username variables": "withCredentials([string(credentialsId: 'c', usernameVariable: 'U', passwordVariable: 'P')]) { echo 'x' }",
    "a timeout without a time": "timeout(unit: 'MINUTES') { echo 'x' }",
    "an unknown step": "slackSend(message: 'x')",
    "a junit step with a misspelt option": "junit(testResults: 'x.xml', allowEmptyResult: true)",
}


@pytest.mark.parametrize("step", list(STRICT_CASES.values()), ids=list(STRICT_CASES))
def test_the_standin_refuses_what_jenkins_refuses(workspace, tmp_path, step):
    jf = tmp_path / "Jenkinsfile"
    jf.write_text(f"""pipeline {{
    agent {{ label 'x' }}
    stages {{
        stage('only') {{ steps {{ script {{ {step} }} }} }}
    }}
    post {{ unsuccessful {{ echo 'unsuccessful' }} }}
}}
""")
    build = workspace.build(
        tmp_path, {}, jenkinsfile=jf, credentials={"c": {"type": "usernamePassword", "username": "u", "password": "p"}}
    )
    assert build.result == "FAILURE"
    (stage,) = build.of("stage")
    assert stage["status"] == "FAILURE" and stage["error"]
    assert build.posts() == ["unsuccessful"]  # a valid post condition Jenkins runs on a failure


INVALID_JUNIT = {
    "a count that is not a number": '<testsuite name="s" tests="two"><testcase name="a"/></testsuite>',
    "a case without a name": '<testsuite name="s" tests="1"><testcase classname="c"/></testsuite>',
    "a failure and an error in one case": '<testsuite name="s" tests="1"><testcase name="a"><failure/><error/></testcase></testsuite>',
    "an element Jenkins does not read": '<testsuite name="s" tests="1"><testcase name="a"><flaky/></testcase></testsuite>',
    "a time that is not seconds": '<testsuite name="s" tests="1"><testcase name="a" time="1m"/></testsuite>',
}


def test_the_junit_schema_refuses_what_is_not_the_format_and_accepts_what_mlops_writes(tmp_path):
    """The schema check can fail: each malformed report is refused; mlops' own (a failure with its reason,
    control characters dropped) passes."""
    from mlops_cli import junit

    bad = []
    for i, text in enumerate(INVALID_JUNIT.values()):
        path = tmp_path / f"bad{i}.xml"
        path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n{text}\n')
        bad.append(str(path))
    done = groovy(str(JENKINS / "validate_xml.groovy"), str(XSD), *bad, timeout=120)
    assert done.returncode == 1
    assert done.stdout.count("invalid ") == len(bad) and "ok " not in done.stdout, done.stdout

    good = junit.write(
        tmp_path / "reports" / "mine.xml",
        "validate-model",
        [
            junit.Case("accuracy", "validation", failure="accuracy = 0.5, needs >= 0.9\nsecond line\x07"),
            junit.Case("schema", "validation", time_s=0.25, detail="inputs match"),
        ],
    )
    validate_junit(good)
    text = good.read_text()
    assert 'tests="2" failures="1"' in text and "\x07" not in text


def test_an_earlier_builds_reports_are_not_published_again(workspace, slack, kafka, tmp_path):
    """On a static agent the workspace outlives a build: a stage that fails before writing its JUnit report must
    not put the previous build's report (here a passing validation) into this build's Tests tab."""
    reports = workspace.workdir / "reports"
    reports.mkdir(parents=True)
    (reports / "validate-model.xml").write_text(
        '<?xml version="1.0"?><testsuite name="old" tests="1"><testcase name="accuracy"/></testsuite>'
    )
    build = workspace.build(tmp_path, {"MODEL_REF": "local:no-such-model"})
    assert build.result == "FAILURE" and build.stage_status()["validate-model"] == "FAILURE"
    junit = {e["stage"]: e["files"] for e in build.of("junit")}
    assert junit["validate-model"] == []
    assert ".mlops/reports/validate-model.xml" not in build.of("archive")[-1]["files"]


@pytest.mark.parametrize("minutes", ["soon", "0", "-5"])
def test_a_gate_timeout_that_is_no_number_of_minutes_fails_the_start_naming_the_setting(
    workspace, slack, kafka, tmp_path, minutes
):
    build = workspace.build(tmp_path, {"MODEL_REF": "local:iris"}, env={"RELEASE_APPROVAL_MINUTES": minutes})
    assert build.result == "FAILURE"
    (start,) = [e for e in build.of("stage") if e["stage"] == "start"]
    assert start["status"] == "FAILURE"
    assert start["error"] == f"RELEASE_APPROVAL_MINUTES must be a whole number of minutes (1 to 99999), not '{minutes}'"
    assert all(status.startswith("skipped") for stage, status in build.stage_status().items() if stage != "start")
