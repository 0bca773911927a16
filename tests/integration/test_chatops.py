"""`mlops chatops` served by uvicorn on 127.0.0.1, with Slack requests signed by slack_sdk's own code
(tests/doubles/slack_web.py: a double of Slack's Web API and response_urls) and Jenkins' remote API
answered by tests/doubles/jenkins_api.py, which python-jenkins talks to for real. Valid, forged,
stale, replayed, retried, other team, other channel, unauthorised, own-release approval; Jenkins
unreachable, 401, job missing; approvals answered in Jenkins and shown in the thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from doubles.jenkins_api import JenkinsApiDouble
from doubles.slack_web import SlackSender, SlackWebDouble
from helpers import free_port

pytestmark = pytest.mark.integration
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT = "xoxb-double-token"
DEPLOYER, VIEWER, APPROVER, APPROVER2, STRANGER, GROUPIE = "U_DEP", "U_VIEW", "U_APP", "U_APP2", "U_NOBODY", "U_GRP"


class Served:
    """The chatops app on a free port in a uvicorn thread; stopped by the fixture."""

    def __init__(self, settings: Any):
        import uvicorn

        from mlops_cli.chatops import build

        self.app, self.service = build(settings)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", access_log=False
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "chatops did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def post(self, path: str, body: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(self.url + path, content=body.encode(), headers=headers, timeout=10)


@pytest.fixture
def slack() -> Iterator[SlackWebDouble]:
    double = SlackWebDouble(token=BOT, channels=("C_RELEASES", "C_OTHER"), groups={"S_RELEASERS": [GROUPIE]})
    double.start()
    yield double
    double.stop()


@pytest.fixture
def jenkins_double() -> Iterator[JenkinsApiDouble]:
    double = JenkinsApiDouble(
        jobs={
            "mlops-release": ("MODEL_REF", "TARGET", "REQUESTED_BY", "SLACK_CHANNEL", "SLACK_THREAD_TS"),
            "mlops-rollback": ("ENV", "REQUESTED_BY", "SLACK_CHANNEL", "SLACK_THREAD_TS"),
        }
    )
    double.start()
    yield double
    double.stop()


def chatops_settings(tmp_path: Path, slack: SlackWebDouble, jenkins: dict[str, Any], **chatops: Any):
    from mlops_cli.config import load_settings

    section = {
        "signing_secret": SECRET,
        "bot_token": BOT,
        "slack_api_url": slack.api_url,
        "response_url_prefix": slack.url + "/response/",
        "team_id": "T_TEAM",
        "channels": ["C_RELEASES"],
        "users": {
            DEPLOYER: ["deployer"],
            VIEWER: ["viewer"],
            APPROVER: ["approver", "deployer"],
            APPROVER2: ["approver"],
        },
        "groups": {"S_RELEASERS": ["deployer"]},
        "executor": "jenkins",
        "jenkins": {"poll_s": 0.05, "queue_timeout_s": 20, "timeout_s": 5, **jenkins},
        **chatops,
    }
    return load_settings(None, {"workdir": tmp_path / "work", "chatops": section}, environ={})


@pytest.fixture
def served(tmp_path, slack, jenkins_double) -> Iterator[Served]:
    server = Served(
        chatops_settings(
            tmp_path,
            slack,
            {
                "url": jenkins_double.url,
                "user": jenkins_double.user,
                "api_token": jenkins_double.token,
                "rollback_job": "mlops-rollback",
            },
        )
    )
    yield server
    server.stop()


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "work" / "chatops-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def deploy(
    served: Served,
    slack: SlackWebDouble,
    sender: SlackSender,
    text: str = "deploy local:iris@3",
    user: str = DEPLOYER,
    **kwargs: Any,
) -> tuple[httpx.Response, str, str]:
    response_url = slack.response_url()
    body = sender.command(text, user, response_url, **kwargs)
    return served.post("/slack/commands", body, sender.sign(body)), body, response_url


def test_a_signed_deploy_triggers_the_job_and_replies_in_a_thread_with_the_build(served, slack, jenkins_double):
    sender = SlackSender(SECRET)
    answer, _, _ = deploy(served, slack, sender, "deploy local:iris@3 to prod kubernetes")
    assert answer.status_code == 200 and answer.json()["response_type"] == "ephemeral"
    assert "deploying `local:iris@3` to prod" in answer.json()["text"]
    root = slack.wait(lambda: slack.roots())[0]
    assert "<@U_DEP> asked to deploy `local:iris@3` to *prod* (kubernetes)" in root["text"]
    link = slack.wait(lambda: slack.thread(root["ts"]))[0]
    build = jenkins_double.all_builds()[0]
    assert build.parameters == {
        "MODEL_REF": "local:iris@3",
        "TARGET": "kubernetes",
        "REQUESTED_BY": "slack:U_DEP",
        "SLACK_CHANNEL": "C_RELEASES",
        "SLACK_THREAD_TS": root["ts"],
    }
    assert f"<{jenkins_double.build_url('mlops-release', 1)}|mlops-release #1>" in link
    assert ("GET", "/crumbIssuer/api/json") in jenkins_double.requests  # python-jenkins' own calls, answered
    assert [e["event"] for e in audit_lines(served.service.audit.path.parent.parent)] == ["accepted", "released"]


@pytest.mark.parametrize("case", ["forged", "stale", "unsigned", "future"])
def test_a_request_not_signed_now_by_slack_is_refused_and_nothing_happens(
    served, slack, jenkins_double, tmp_path, case
):
    sender = SlackSender("not-the-signing-secret" if case == "forged" else SECRET)
    response_url = slack.response_url()
    body = sender.command("deploy local:iris@3", DEPLOYER, response_url)
    headers = {
        "stale": sender.sign(body, int(time.time()) - 301),
        "future": sender.sign(body, int(time.time()) + 400),
        "forged": sender.sign(body),
        "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
    }[case]
    answer = served.post("/slack/commands", body, headers)
    assert answer.status_code == 401
    time.sleep(0.3)
    assert slack.messages == [] and slack.responses == {} and jenkins_double.requests == []
    refused = audit_lines(tmp_path)[-1]
    assert refused["event"] == "refused" and refused["reason"] == (
        "forged" if case == "forged" else "unsigned" if case == "unsigned" else "stale"
    )
    # a body altered after Slack signed it is forged too
    good = SlackSender(SECRET).sign(body)
    assert served.post("/slack/commands", body.replace("iris%403", "iris%404"), good).status_code == 401
    assert audit_lines(tmp_path)[-1]["reason"] == "forged"
    time.sleep(0.3)
    assert slack.messages == [] and jenkins_double.requests == []


def test_a_flood_of_forged_requests_is_counted_but_fills_no_disk(served, slack, tmp_path):
    sender = SlackSender("not-the-signing-secret")
    for i in range(20):
        body = sender.command(f"deploy local:iris@{i}", DEPLOYER, slack.response_url())
        assert served.post("/slack/commands", body, sender.sign(body)).status_code == 401
    refused = [e for e in audit_lines(tmp_path) if e["event"] == "refused"]
    assert len(refused) == 1 and refused[0]["reason"] == "forged"
    metrics = httpx.get(served.url + "/metrics").text
    assert 'mlops_chatops_requests_total{endpoint="commands",outcome="forged"} 20.0' in metrics


def test_a_replayed_request_is_refused_and_slack_retries_are_not_acted_on_twice(
    served, slack, jenkins_double, tmp_path
):
    sender = SlackSender(SECRET)
    response_url = slack.response_url()
    body = sender.command("deploy local:iris@3", DEPLOYER, response_url, trigger_id="123.trigger")
    headers = sender.sign(body)
    assert served.post("/slack/commands", body, headers).status_code == 200
    assert served.post("/slack/commands", body, headers).status_code == 401  # the same signature again: a replay
    # Slack's retry: the same request re-sent with X-Slack-Retry-Num (same signature, or signed anew)
    assert (
        served.post(
            "/slack/commands", body, {**headers, "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
        ).status_code
        == 200
    )
    time.sleep(1.1)
    resigned = sender.sign(body)
    retry = served.post("/slack/commands", body, {**resigned, "X-Slack-Retry-Num": "2"})
    assert retry.status_code == 200 and retry.content == b""
    slack.wait(lambda: jenkins_double.all_builds() and slack.thread(slack.roots()[0]["ts"]))
    time.sleep(0.5)
    assert len(jenkins_double.triggered()) == 1 and len(slack.roots()) == 1
    assert [e["reason"] for e in audit_lines(tmp_path) if e["event"] == "refused"] == ["replayed"]


@pytest.mark.parametrize(
    "who, where, expected",
    [
        (DEPLOYER, {"team": "T_OTHER"}, "does not take commands from this workspace"),
        (DEPLOYER, {"channel": "C_OTHER"}, "not accepted in this channel"),
        (VIEWER, {}, "you need the deployer role to deploy a model"),
        (STRANGER, {}, "you need the deployer role to deploy a model"),
    ],
)
def test_refusals_are_one_ephemeral_line_and_an_audit_line_and_trigger_nothing(
    served, slack, jenkins_double, tmp_path, who, where, expected
):
    answer, _, _ = deploy(served, slack, SlackSender(SECRET), user=who, **where)
    assert answer.status_code == 200
    assert answer.json() == {"response_type": "ephemeral", "text": answer.json()["text"]}
    assert expected in answer.json()["text"] and "\n" not in answer.json()["text"]
    time.sleep(0.3)
    assert slack.messages == [] and jenkins_double.requests == []
    entry = audit_lines(tmp_path)[-1]
    assert entry["event"] == "refused" and entry["user"] == who and entry["command"] == "/mlops deploy local:iris@3"


def test_a_user_group_gives_its_members_their_role(served, slack, jenkins_double):
    slack.wait(lambda: "/api/usergroups.users.list" in slack.calls)
    answer, _, _ = deploy(served, slack, SlackSender(SECRET), user=GROUPIE)
    assert "deploying" in answer.json()["text"]
    slack.wait(lambda: jenkins_double.all_builds())


def test_help_usage_and_viewer_commands(served, slack):
    sender = SlackSender(SECRET)
    help_answer, _, _ = deploy(served, slack, sender, "help", user=VIEWER)
    assert "deploy MODEL_REF [to test|prod]" in help_answer.json()["text"]
    assert "rollback prod" in help_answer.json()["text"]
    usage, _, _ = deploy(served, slack, sender, "deploy notaref", user=DEPLOYER)
    assert "has no scheme" in usage.json()["text"]
    status, _, response_url = deploy(served, slack, sender, "status prod", user=VIEWER)
    assert status.status_code == 200
    assert slack.wait(lambda: slack.answers(response_url))[0]["text"] == "*prod*: nothing deployed"


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("unreachable", "is unreachable"),
        ("401", "Jenkins refused the credentials (401)"),
        ("job-missing", "Jenkins has no job 'mlops-nope'"),
    ],
)
def test_jenkins_failures_are_one_clear_line_in_the_thread_and_nothing_is_started(
    tmp_path, slack, jenkins_double, problem, expected
):
    jenkins = {"url": jenkins_double.url, "user": jenkins_double.user, "api_token": jenkins_double.token}
    if problem == "unreachable":
        jenkins["url"] = f"http://127.0.0.1:{free_port()}/"
    elif problem == "401":
        jenkins["api_token"] = "revoked-token"
    else:
        jenkins["job"] = "mlops-nope"
    server = Served(chatops_settings(tmp_path, slack, jenkins))
    try:
        answer, _, _ = deploy(server, slack, SlackSender(SECRET))
        assert answer.status_code == 200
        root = slack.wait(lambda: slack.roots())[0]
        line = slack.wait(lambda: slack.thread(root["ts"]))[0]
    finally:
        server.stop()
    assert line.startswith(":x: ") and expected in line and "\n" not in line
    assert jenkins_double.triggered() == [] and jenkins_double.all_builds() == []
    assert jenkins_double.token not in line and "revoked-token" not in line
    assert audit_lines(tmp_path)[-1]["event"] == "failed"


# --- approvals ------------------------------------------------------------------------------------


def approval_message(
    jenkins: JenkinsApiDouble,
    build_number: int,
    requested_by: str,
    *,
    job: str = "mlops-release",
    build_url: str | None = None,
    ts: str = "1700000999.000100",
) -> dict[str, Any]:
    """The Block Kit message the pipeline posts at the gate (`mlops notify --event approval-requested`),
    built by the pipeline's own code (notifiers.slack.approval_blocks), so both sides of the contract meet."""
    from mlops_cli.notifiers.slack import approval_blocks, approval_value

    request = approval_value(
        job,
        build_number,
        build_url or jenkins.build_url(job, build_number),
        requested_by=requested_by,
        model="local:iris@3",
        digest="registry.example/iris@sha256:" + "a" * 64,
    )
    return {
        "type": "message",
        "ts": ts,
        "thread_ts": "1700000001.000100",
        "text": "Approve release?",
        "blocks": [
            {
                "type": "section",
                "block_id": "summary",
                "text": {"type": "mrkdwn", "text": "*local:iris@3* to prod: approve?"},
            },
            *approval_blocks(request),
        ],
    }


def click(
    served: Served, slack: SlackWebDouble, message: dict[str, Any], action: str, user: str, **kwargs: Any
) -> tuple[httpx.Response, str]:
    sender = SlackSender(SECRET)
    response_url = slack.response_url()
    value = message["blocks"][1]["elements"][0]["value"]
    body = sender.click(action, value, user, response_url, message, **kwargs)
    return served.post("/slack/interactions", body, sender.sign(body)), response_url


def test_an_approver_approves_in_the_thread_and_jenkins_input_proceeds(served, slack, jenkins_double, tmp_path):
    build = jenkins_double.pending_build(parameters={"REQUESTED_BY": "slack:U_DEP"})
    message = approval_message(jenkins_double, build.number, "slack:U_DEP")
    answer, _ = click(served, slack, message, "mlops_approve", APPROVER)
    assert answer.status_code == 200
    update = slack.wait(lambda: slack.updates)[0]
    assert build.answers == [
        {"action": "submit", "form": build.answers[0]["form"], "parameters": {"SLACK_APPROVER": "slack:U_APP"}}
    ]
    assert build.answers[0]["form"]["proceed"]
    assert update["ts"] == message["ts"] and update["channel"] == "C_RELEASES"
    decided = update["blocks"][-1]["elements"][0]["text"]
    assert decided.startswith(":white_check_mark: Approved by <@U_APP> at 20")
    assert not any(b.get("type") == "actions" for b in update["blocks"])  # the buttons are gone
    assert audit_lines(tmp_path)[-1]["event"] == "approved"
    # a second click (another approver, a stale copy of the message) answers nothing twice
    again, response_url = click(served, slack, message, "mlops_reject", APPROVER2)
    assert again.status_code == 200
    assert "decided already" in slack.wait(lambda: slack.answers(response_url))[0]["text"]
    assert len(build.answers) == 1
    assert not served.app.state.decisions.claim(f"mlops-release#{build.number}")  # the app's bounded memory


def test_an_input_id_written_lower_case_is_answered_where_jenkins_keeps_it(tmp_path, slack, jenkins_double):
    """`input id: 'releaseApproval'` waits at input/ReleaseApproval/ (Jenkins capitalises the first letter)."""
    server = Served(
        chatops_settings(
            tmp_path,
            slack,
            {
                "url": jenkins_double.url,
                "user": jenkins_double.user,
                "api_token": jenkins_double.token,
                "input_id": "releaseApproval",
            },
        )
    )
    try:
        build = jenkins_double.pending_build(input_id="releaseApproval")
        message = approval_message(jenkins_double, build.number, "slack:U_DEP")
        message["blocks"][1]["elements"][0]["value"] = message["blocks"][1]["elements"][0]["value"].replace(
            '"ReleaseApproval"', '"releaseApproval"'
        )
        click(server, slack, message, "mlops_approve", APPROVER2)
        slack.wait(lambda: slack.updates)
    finally:
        server.stop()
    assert [a["action"] for a in build.answers] == ["submit"]
    assert ("POST", f"/job/mlops-release/{build.number}/input/ReleaseApproval/submit") in jenkins_double.requests


def test_an_input_without_the_approver_parameter_is_one_clear_line_and_can_be_decided_again(
    served, slack, jenkins_double, tmp_path
):
    build = jenkins_double.pending_build()
    build.input_parameters = ()  # a Jenkinsfile whose input step defines no SLACK_APPROVER: Jenkins answers 500
    message = approval_message(jenkins_double, build.number, "slack:U_DEP")
    _, response_url = click(served, slack, message, "mlops_approve", APPROVER2)
    text = slack.wait(lambda: slack.answers(response_url))[0]["text"]
    assert text.startswith("not approved: answering mlops-release #1: Jenkins answered 500") and "\n" not in text
    assert "SLACK_APPROVER" in text and build.answers == [] and slack.updates == []
    assert audit_lines(tmp_path)[-1]["event"] == "decision-failed"
    build.input_parameters = ("SLACK_APPROVER",)  # fixed in Jenkins: the same button works
    click(served, slack, message, "mlops_approve", APPROVER2)
    slack.wait(lambda: slack.updates)
    assert [a["action"] for a in build.answers] == ["submit"]


def test_reject_aborts_the_input(served, slack, jenkins_double):
    build = jenkins_double.pending_build()
    click(served, slack, approval_message(jenkins_double, build.number, "slack:U_DEP"), "mlops_reject", APPROVER2)
    update = slack.wait(lambda: slack.updates)[0]
    assert [a["action"] for a in build.answers] == ["abort"]
    assert update["blocks"][-1]["elements"][0]["text"].startswith(":no_entry: Rejected by <@U_APP2>")


@pytest.mark.parametrize(
    "user, requested_by, tamper, expected",
    [
        (APPROVER, "slack:U_APP", None, "four eyes: you requested this release"),
        (DEPLOYER, "slack:U_APP", None, "you need the approver role"),
        (APPROVER2, "slack:U_DEP", {"job": "other-job"}, "not the release job"),
        (APPROVER2, "slack:U_DEP", {"build_url": "http://evil.example/job/mlops-release/1/"}, "build URL is not"),
        (APPROVER2, "slack:U_DEP", {"channel": "C_OTHER"}, "not accepted in this channel"),
        (APPROVER2, "slack:U_DEP", {"team": "T_OTHER"}, "does not take commands from this workspace"),
        (STRANGER, "slack:U_DEP", None, "you need the approver role"),
    ],
)
def test_approvals_that_do_not_hold_are_refused_and_jenkins_is_not_answered(
    served, slack, jenkins_double, tmp_path, user, requested_by, tamper, expected
):
    build = jenkins_double.pending_build()
    tamper = tamper or {}
    message = approval_message(
        jenkins_double,
        build.number,
        requested_by,
        job=tamper.get("job", "mlops-release"),
        build_url=tamper.get("build_url"),
    )
    answer, response_url = click(
        served, slack, message, "mlops_approve", user, **{k: tamper[k] for k in ("channel", "team") if k in tamper}
    )
    assert answer.status_code == 200
    reply = slack.wait(lambda: slack.answers(response_url))[0]
    assert expected in reply["text"] and reply["response_type"] == "ephemeral"
    time.sleep(0.3)
    assert build.answers == [] and slack.updates == []
    assert not any(path.endswith(("/submit", "/abort")) for _, path in jenkins_double.requests)
    assert audit_lines(tmp_path)[-1]["event"] == "refused"


def test_four_eyes_is_judged_on_the_builds_own_requester_not_on_the_buttons_copy(
    served, slack, jenkins_double, tmp_path
):
    build = jenkins_double.pending_build(parameters={"REQUESTED_BY": "slack:U_APP"})
    message = approval_message(jenkins_double, build.number, "slack:U_DEP")  # the button names someone else
    answer, response_url = click(served, slack, message, "mlops_approve", APPROVER)
    assert answer.status_code == 200
    reply = slack.wait(lambda: slack.answers(response_url))[0]
    assert "four eyes: you requested this release" in reply["text"]
    time.sleep(0.3)
    assert build.answers == [] and slack.updates == []
    assert ("GET", f"/job/mlops-release/{build.number}/api/json") in jenkins_double.requests
    assert audit_lines(tmp_path)[-1]["event"] == "refused" and audit_lines(tmp_path)[-1]["reason"] == "own-release"
    # another approver may still decide it
    click(served, slack, message, "mlops_approve", APPROVER2)
    slack.wait(lambda: slack.updates)
    assert [a["action"] for a in build.answers] == ["submit"]
    assert audit_lines(tmp_path)[-1]["requested_by"] == "slack:U_APP"


@pytest.mark.parametrize(
    "payload, status",
    [
        ("[1, 2]", 400),
        ('{"type": "block_actions", "actions": {"0": {"action_id": "mlops_approve"}}}', 200),
        ('{"type": "block_actions", "actions": [{"action_id": "mlops_approve"}], "user": "U_APP"}', 400),
        (
            '{"type": "block_actions", "actions": [{"action_id": "mlops_rollback_confirm", "value": "{\\"env\\": \\"../x\\"}"}],'
            ' "user": {"id": "U_DEP"}, "team": {"id": "T_TEAM"}, "channel": {"id": "C_RELEASES"}, "response_url": 7}',
            200,
        ),
    ],
)
def test_a_signed_but_odd_interaction_payload_is_answered_without_an_error(
    served, slack, jenkins_double, payload, status
):
    from urllib.parse import urlencode

    sender = SlackSender(SECRET)
    body = urlencode({"payload": payload})
    answer = served.post("/slack/interactions", body, sender.sign(body))
    assert answer.status_code == status
    time.sleep(0.3)
    assert jenkins_double.requests == [] and slack.updates == [] and slack.messages == []


def test_a_forged_click_is_refused(served, slack, jenkins_double):
    build = jenkins_double.pending_build()
    message = approval_message(jenkins_double, build.number, "slack:U_DEP")
    sender = SlackSender("forged-secret")
    body = sender.click(
        "mlops_approve", message["blocks"][1]["elements"][0]["value"], APPROVER2, slack.response_url(), message
    )
    assert served.post("/slack/interactions", body, sender.sign(body)).status_code == 401
    time.sleep(0.3)
    assert build.answers == [] and slack.updates == [] and slack.responses == {}


def test_rollback_asks_for_confirmation_then_triggers_the_rollback_job(served, slack, jenkins_double):
    answer, _, _ = deploy(served, slack, SlackSender(SECRET), "rollback prod", user=DEPLOYER)
    blocks = answer.json()["blocks"]
    confirm = blocks[1]["elements"][0]
    assert confirm["action_id"] == "mlops_rollback_confirm" and jenkins_double.triggered() == []
    sender = SlackSender(SECRET)
    response_url = slack.response_url()
    message = {"type": "message", "ts": "1700000500.000100", "text": "Roll prod back?", "blocks": blocks}
    body = sender.click("mlops_rollback_confirm", confirm["value"], VIEWER, response_url, message)
    served.post("/slack/interactions", body, sender.sign(body))
    assert "you need the deployer role" in slack.wait(lambda: slack.answers(response_url))[0]["text"]
    body = sender.click("mlops_rollback_confirm", confirm["value"], DEPLOYER, response_url, message)
    served.post("/slack/interactions", body, sender.sign(body))
    twice_url = slack.response_url()  # a double click: a second request, its own trigger_id
    body = sender.click("mlops_rollback_confirm", confirm["value"], DEPLOYER, twice_url, message)
    served.post("/slack/interactions", body, sender.sign(body))
    assert "confirmed or cancelled already" in slack.wait(lambda: slack.answers(twice_url))[0]["text"]
    build = slack.wait(lambda: jenkins_double.all_builds("mlops-rollback"))[0]
    assert build.parameters["ENV"] == "prod" and build.parameters["REQUESTED_BY"] == "slack:U_DEP"
    root = slack.wait(lambda: slack.roots())[0]
    assert "mlops-rollback #1" in slack.wait(lambda: slack.thread(root["ts"]))[0]
    time.sleep(0.5)
    assert len(jenkins_double.triggered()) == 1 and len(slack.roots()) == 1  # rolled back once


def test_health_ready_and_metrics(served):
    assert httpx.get(served.url + "/health/live").json()["status"] == "alive"
    assert httpx.get(served.url + "/health/ready").json() == {"status": "ready", "queued": 0, "executor": "jenkins"}
    metrics = httpx.get(served.url + "/metrics").text
    assert "mlops_chatops_queue_depth 0.0" in metrics and "mlops_chatops_ack_seconds" in metrics


def test_a_full_queue_answers_busy_and_runs_nothing(tmp_path, slack):
    jenkins = JenkinsApiDouble(start_after=10_000)  # builds stay queued: the one worker is kept busy
    jenkins.start()
    server = Served(
        chatops_settings(
            tmp_path,
            slack,
            {"url": jenkins.url, "user": jenkins.user, "api_token": jenkins.token, "queue_timeout_s": 2},
            workers=1,
            queue_max=1,
        )
    )
    try:
        sender = SlackSender(SECRET)
        first, _, _ = deploy(server, slack, sender, "deploy local:iris@1")
        slack.wait(lambda: jenkins.triggered())  # the worker follows the first build's queue item
        second, _, _ = deploy(server, slack, sender, "deploy local:iris@2")
        third, _, _ = deploy(server, slack, sender, "deploy local:iris@3")
        assert "deploying" in first.json()["text"] and "deploying" in second.json()["text"]
        assert third.json()["text"].startswith("busy: 1 commands are waiting; nothing was started")
        roots = slack.wait(
            lambda: len(slack.roots()) == 2 and all(slack.thread(r["ts"]) for r in slack.roots()) and slack.roots(),
            timeout=30,
        )
        for root in roots:
            assert "not started after 2s" in slack.thread(root["ts"])[0]
        assert sorted(t["parameters"]["MODEL_REF"] for t in jenkins.triggered()) == ["local:iris@1", "local:iris@2"]
        assert [e["reason"] for e in audit_lines(tmp_path) if e["event"] == "refused"] == ["busy"]
    finally:
        server.stop()
        jenkins.stop()


def test_status_and_approvals_are_answered_while_every_release_worker_waits(tmp_path, slack):
    jenkins = JenkinsApiDouble(start_after=10_000)  # the release stays queued: the one release worker waits
    jenkins.start()
    server = Served(
        chatops_settings(
            tmp_path,
            slack,
            {"url": jenkins.url, "user": jenkins.user, "api_token": jenkins.token, "queue_timeout_s": 8},
            workers=1,
        )
    )
    try:
        sender = SlackSender(SECRET)
        deploy(server, slack, sender, "deploy local:iris@1")
        slack.wait(lambda: jenkins.triggered())  # the worker now follows the queue item for 8 s
        started = time.monotonic()
        _, _, response_url = deploy(server, slack, sender, "status prod", user=VIEWER)
        assert slack.wait(lambda: slack.answers(response_url), timeout=4)[0]["text"] == "*prod*: nothing deployed"
        build = jenkins.pending_build()
        click(server, slack, approval_message(jenkins, build.number, "slack:U_DEP"), "mlops_approve", APPROVER2)
        slack.wait(lambda: slack.updates, timeout=4)
        assert time.monotonic() - started < 6 and [a["action"] for a in build.answers] == ["submit"]
    finally:
        server.stop()
        jenkins.stop()


def test_commands_and_clicks_are_acked_at_once_while_slack_and_jenkins_are_slow(served, slack, jenkins_double):
    slack.delay_s = jenkins_double.delay_s = 3.5  # each answer from Slack or Jenkins takes 3.5 s
    sender = SlackSender(SECRET)
    build = jenkins_double.pending_build()
    acks = []
    for text, user in [("deploy local:iris@3", DEPLOYER), ("status prod", VIEWER), ("models", VIEWER)]:
        started = time.monotonic()
        answer, _, _ = deploy(served, slack, sender, text, user=user)
        acks.append(time.monotonic() - started)
        assert answer.status_code == 200
    started = time.monotonic()
    answer, _ = click(
        served, slack, approval_message(jenkins_double, build.number, "slack:U_DEP"), "mlops_approve", APPROVER2
    )
    acks.append(time.monotonic() - started)
    assert answer.status_code == 200 and max(acks) < 2.0, acks  # Slack's budget is 3 s
    slack.wait(lambda: slack.updates, timeout=40)  # the work still happens, after the acks
    assert [a["action"] for a in build.answers] == ["submit"]


def test_the_jobs_remote_trigger_token_is_sent_and_a_wrong_one_starts_nothing(tmp_path, slack):
    jenkins = JenkinsApiDouble(build_tokens={"mlops-release": "job-trigger-t0ken"}, start_after=0)
    jenkins.start()
    try:
        for given, expected in [
            ("wrong-trigger-token", "Jenkins refused (403)"),
            ("job-trigger-t0ken", "mlops-release #1"),
        ]:
            server = Served(
                chatops_settings(
                    tmp_path,
                    slack,
                    {"url": jenkins.url, "user": jenkins.user, "api_token": jenkins.token, "build_token": given},
                )
            )
            try:
                before = len(slack.roots())
                deploy(server, slack, SlackSender(SECRET))
                root = slack.wait(lambda before=before: len(slack.roots()) > before and slack.roots()[-1])
                line = slack.wait(lambda root=root: slack.thread(root["ts"]))[0]
            finally:
                server.stop()
            assert expected in line and given not in line
        assert len(jenkins.triggered()) == 1
    finally:
        jenkins.stop()


def test_slacks_certificate_check_is_answered_and_does_nothing(served, slack, jenkins_double):
    answer = served.post(
        "/slack/commands", "ssl_check=1&token=deprecated", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 200 and answer.content == b""
    # a command dressed up with ssl_check is still a command: unsigned, refused
    body = (
        "ssl_check=1&command=%2Fmlops&text=deploy+local%3Airis%403&user_id=U_DEP&team_id=T_TEAM&channel_id=C_RELEASES"
    )
    assert (
        served.post("/slack/commands", body, {"Content-Type": "application/x-www-form-urlencoded"}).status_code == 401
    )
    time.sleep(0.3)
    assert slack.messages == [] and jenkins_double.requests == []


def test_a_channel_the_app_cannot_post_in_is_told_through_the_response_url_and_nothing_starts(
    tmp_path, slack, jenkins_double
):
    server = Served(
        chatops_settings(
            tmp_path,
            slack,
            {"url": jenkins_double.url, "user": jenkins_double.user, "api_token": jenkins_double.token},
            channels=[],
        )
    )
    try:
        _, _, response_url = deploy(server, slack, SlackSender(SECRET), channel="C_NOT_INVITED")
        text = slack.wait(lambda: slack.answers(response_url))[0]["text"]
    finally:
        server.stop()
    assert "cannot post in this channel (Slack refused chat_postMessage: channel_not_found)" in text
    assert "nothing was started" in text and jenkins_double.requests == []


def test_a_job_without_the_release_parameters_starts_nothing(tmp_path, slack):
    jenkins = JenkinsApiDouble(jobs={"mlops-release": ("MODEL_ID", "TARGET")})  # today's Jenkinsfile's parameters
    jenkins.start()
    server = Served(
        chatops_settings(tmp_path, slack, {"url": jenkins.url, "user": jenkins.user, "api_token": jenkins.token})
    )
    try:
        deploy(server, slack, SlackSender(SECRET), "deploy local:iris@3 to prod kubernetes")
        root = slack.wait(lambda: slack.roots())[0]
        line = slack.wait(lambda: slack.thread(root["ts"]))[0]
    finally:
        server.stop()
        jenkins.stop()
    assert "takes no parameter MODEL_REF, REQUESTED_BY, SLACK_CHANNEL, SLACK_THREAD_TS, so nothing was started" in line
    assert jenkins.triggered() == []
