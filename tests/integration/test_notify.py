"""`mlops notify` and the Slack Web API path of the slack notifier, against the Slack Web API double
(tests/doubles/slack_api.py) through the real slack_sdk WebClient; the approval buttons' contract."""

from __future__ import annotations

import json

import pytest
from doubles.slack_api import SlackWebAPIDouble
from helpers import read_state, run_cli
from test_slack_notifier import SlackWebhookDouble

from mlops_cli.notifiers import Notification, notify
from mlops_cli.notifiers.slack import approval_blocks, approval_value, parse_approval_value
from mlops_cli.state import StageRecord, State, ValidationRecord

pytestmark = pytest.mark.integration

TOKEN = "xoxb-1234-s3cr3t"


@pytest.fixture
def slack():
    double = SlackWebAPIDouble(token=TOKEN, channels=("C1", "C2"))
    yield double
    double.close()


def bot_settings(make_settings, slack, token=TOKEN, **slack_cfg):
    return make_settings(
        notify={
            "notifiers": ["slack"],
            "retries": 1,
            "retry_backoff_s": 0,
            "slack": {"bot_token": token, "api_url": slack.api_url, **slack_cfg},
        }
    )


NOTE = Notification(
    title="iris@3 released to production",
    severity="success",
    kind="release",
    fields={"model": "local:iris@3"},
    link="https://jenkins.example/job/r/7/",
    button="Open build #7",
    channel="C1",
    thread_ts="1700000000.000001",
)


def test_the_bot_posts_in_the_thread_with_a_link_button(make_settings, slack):
    (result,) = notify(bot_settings(make_settings, slack), NOTE)
    assert result.delivered and result.attempts == 1
    (message,) = slack.messages
    assert (message["channel"], message["thread_ts"]) == ("C1", "1700000000.000001")
    assert message["text"].endswith("iris@3 released to production")
    (button,) = [el for b in message["blocks"] if b["type"] == "actions" for el in b["elements"]]
    assert button["url"] == NOTE.link and button["text"]["text"] == "Open build #7"


def test_the_configured_channel_serves_when_the_note_names_none(make_settings, slack):
    note = Notification(title="started", kind="release")
    (result,) = notify(bot_settings(make_settings, slack, channel="C2"), note)
    assert result.delivered and slack.messages[0]["channel"] == "C2" and slack.messages[0]["thread_ts"] is None


@pytest.mark.parametrize(
    "token, channel, error", [("xoxb-wrong", "C1", "invalid_auth"), (TOKEN, "C404", "channel_not_found")]
)
def test_a_wrong_token_or_channel_is_a_sink_refusing_everything(make_settings, slack, token, channel, error):
    from mlops_cli.notifiers import DeliveryError
    from mlops_cli.notifiers.slack import SlackNotifier

    notifier = SlackNotifier(bot_settings(make_settings, slack, token=token))
    with pytest.raises(DeliveryError) as caught:
        notifier.send(Notification(title="x", channel=channel))
    assert caught.value.sink_down and not caught.value.retryable
    assert error in str(caught.value) and TOKEN not in str(caught.value) and "xoxb" not in str(caught.value)
    assert slack.messages == []


def test_rate_limited_is_retried(make_settings, slack):
    slack.script = [429]
    (result,) = notify(bot_settings(make_settings, slack), NOTE)
    assert result.delivered and result.attempts == 2
    assert [c["status"] for c in slack.calls] == [429, 200]


def test_an_unreachable_api_is_retryable_and_never_shows_the_token(make_settings, slack):
    from helpers import free_port

    settings = make_settings(
        notify={
            "notifiers": ["slack"],
            "retries": 0,
            "slack": {"bot_token": TOKEN, "api_url": f"http://127.0.0.1:{free_port()}/api/", "timeout_s": 2},
        }
    )
    (result,) = notify(settings, NOTE)
    assert not result.delivered and "unreachable" in result.error and TOKEN not in result.error


def test_without_a_bot_token_the_webhook_serves_unthreaded(make_settings):
    webhook = SlackWebhookDouble()
    try:
        settings = make_settings(notify={"notifiers": ["slack"], "slack": {"webhook_url": webhook.url}})
        (result,) = notify(settings, NOTE)
        assert result.delivered
        assert webhook.received[0]["text"].endswith("iris@3 released to production")
    finally:
        webhook.close()


def test_approval_buttons_carry_the_request_the_chatops_service_reads():
    request = approval_value(
        "mlops-release",
        7,
        "https://jenkins.example/job/mlops-release/7/",
        requested_by="slack:U123",
        model="local:iris@3",
        digest="reg/iris@sha256:" + "a" * 64,
    )
    (block,) = approval_blocks(request)
    assert block["type"] == "actions" and block["block_id"] == "mlops_approval"
    approve, reject = block["elements"]
    assert [(b["action_id"], b["style"]) for b in (approve, reject)] == [
        ("mlops_approve", "primary"),
        ("mlops_reject", "danger"),
    ]
    assert parse_approval_value(approve["value"]) == request == parse_approval_value(reject["value"])
    assert request["build"] == 7 and request["input_id"] == "ReleaseApproval"
    for bad in ("not json", json.dumps({"job": "x"}), json.dumps({**request, "build": "7"})):
        with pytest.raises(ValueError):
            parse_approval_value(bad)


def test_notify_names_the_failed_stage_and_its_reason_from_state(make_settings, slack, tmp_path):
    settings = bot_settings(make_settings, slack)
    state = State(validation=ValidationRecord(passed=False, model_ref="local:iris@1"))
    state.stages["unit-test"] = StageRecord(status="passed", started_at="2026-11-30T10:00:00+00:00")
    state.stages["validate-model"] = StageRecord(
        status="failed",
        started_at="2026-11-30T10:01:00+00:00",
        message="model local:iris@1 failed validation: accuracy = 0.5\nmore",
    )
    state.save(settings.workdir)
    config = tmp_path / "mlops.yaml"
    config.write_text(json.dumps({"notify": {"notifiers": ["slack"], "slack": {"api_url": slack.api_url}}}))
    done = run_cli(
        "notify",
        "--event",
        "failure",
        "--json",
        "--workdir",
        str(settings.workdir),
        "--config",
        str(config),
        env={
            "MLOPS_NOTIFY__SLACK__BOT_TOKEN": TOKEN,
            "SLACK_CHANNEL": "C1",
            "SLACK_THREAD_TS": "17.1",
            "BUILD_URL": "https://jenkins.example/job/r/9/",
            "JOB_NAME": "r",
            "BUILD_NUMBER": "9",
            "TRIGGERED_BY": "slack:U9",
        },
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["title"] == "Release of local:iris@1 failed at validate-model"
    assert result["fields"]["failed stage"] == "validate-model" and result["fields"]["triggered by"] == "slack:U9"
    assert result["deliveries"] == [{"notifier": "slack", "delivered": True, "attempts": 1, "error": None}]
    (message,) = slack.messages
    assert message["thread_ts"] == "17.1"
    assert any(
        "accuracy = 0.5" in b.get("text", {}).get("text", "") and "more" not in b["text"]["text"]
        for b in message["blocks"]
        if b["type"] == "section"
    )
    assert TOKEN not in done.stdout + done.stderr


def test_approval_requested_outside_a_build_is_a_one_line_error(tmp_path):
    done = run_cli("notify", "--event", "approval-requested", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "needs the job, build number and build URL" in done.stderr


def test_the_approval_decision_is_recorded(tmp_path):
    done = run_cli(
        "approval",
        "--decision",
        "rejected",
        "--by",
        "bob",
        "--workdir",
        str(tmp_path / "w"),
        cwd=tmp_path,
        env={"TRIGGERED_BY": "slack:U1", "BUILD_URL": "https://jenkins.example/job/r/3/"},
    )
    assert done.returncode == 0, done.stderr
    (record,) = read_state(tmp_path / "w")["approvals"]
    assert (record["decision"], record["by"], record["triggered_by"], record["build_url"]) == (
        "rejected",
        "bob",
        "slack:U1",
        "https://jenkins.example/job/r/3/",
    )


def test_a_new_release_is_not_named_after_the_previous_builds_model(make_settings, tmp_path):
    from mlops_cli.notify import NotifyRequest, compose
    from mlops_cli.state import BundleRecord, ModelRecord

    settings = make_settings(model="local:iris@2")
    old = ModelRecord(
        ref="local:iris@1",
        name="iris",
        version="1",
        framework="sklearn",
        task="classification",
        sha256="a" * 64,
        artifact_name="iris.joblib",
        schema={"inputs": [], "outputs": []},
    )
    State(
        model=old,
        validation=ValidationRecord(passed=True, model_ref="local:iris@1", model_sha256="a" * 64),
        bundle=BundleRecord(path=str(tmp_path), model_sha256="a" * 64, bundle_digest="b" * 64),
    ).save(settings.workdir)
    note = compose(settings, NotifyRequest(event="started", environ={}))
    assert note.title == "Release of local:iris@2 started" and "digest" not in note.fields
    assert (
        compose(make_settings(workdir=settings.workdir), NotifyRequest(event="success", environ={})).fields["digest"]
        == "bundle sha256:" + "b" * 64
    )


def test_the_double_updates_a_posted_message_as_slack_does(slack):
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[])
    posted = client.chat_postMessage(
        channel="C1",
        text="Approval needed",
        blocks=approval_blocks(approval_value("r", 1, "https://jenkins.example/job/r/1/")),
    )
    updated = client.chat_update(channel="C1", ts=posted["ts"], text="Approved by <@U456>", blocks=[])
    assert updated["ts"] == posted["ts"] and slack.messages[0]["text"] == "Approved by <@U456>"
    assert slack.messages[0]["updated"] == 1 and len(slack.messages) == 1
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C1", ts="1.2", text="x")
    assert caught.value.response["error"] == "message_not_found"
