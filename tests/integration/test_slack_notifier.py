"""The slack notifier through the real slack_sdk against a stand-in for Slack's incoming webhook.

The stand-in is a real HTTP server on 127.0.0.1 that answers as Slack's incoming webhooks do
(https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks/): `200 ok` for a
good message, `400 invalid_payload`, `404 no_service`, `429` with Retry-After, `500`.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops_cli.notifiers import DeliveryError, Notification, notify
from tests.helpers import free_port

pytestmark = pytest.mark.integration

SECRET_PATH = "/services/T000/B000/s3cr3t-token"


class SlackWebhookDouble:
    """Answers POSTs on SECRET_PATH with the next scripted (status, body); records what arrived."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.script: list[tuple[int, str]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != SECRET_PATH:
                    status, text = 404, "no_service"
                else:
                    status, text = double.script.pop(0) if double.script else (200, "ok")
                    if status == 200:
                        double.received.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{SECRET_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack():
    double = SlackWebhookDouble()
    yield double
    double.close()


def _settings(make_settings, url: str, **notify):
    return make_settings(notify={"notifiers": ["slack"], "slack": {"webhook_url": url}, **notify})


NOTE = Notification(
    title="rolling-update of iris@3 to prod succeeded",
    severity="success",
    kind="rollout",
    text="revision 4 replaced revision 3 <no failed requests> & no restarts",
    fields={"model": "iris@3", "digest": "sha256:abc"},
    link="https://jenkins.example/job/1",
)


def test_delivers_a_block_kit_message(make_settings, slack):
    results = notify(_settings(make_settings, slack.url), NOTE)
    assert [(r.notifier, r.delivered, r.attempts) for r in results] == [("slack", True, 1)]
    [message] = slack.received
    assert message["text"].endswith(NOTE.title)
    header, section, fields, context = message["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": NOTE.title, "emoji": True}}
    assert section["text"]["text"] == "revision 4 replaced revision 3 &lt;no failed requests&gt; &amp; no restarts"
    assert [f["text"] for f in fields["fields"]] == ["*model*\niris@3", "*digest*\nsha256:abc"]
    assert "<https://jenkins.example/job/1|details>" in context["elements"][0]["text"]


def test_retries_5xx_and_429_then_delivers(make_settings, slack):
    slack.script = [(500, "internal_error"), (429, "rate_limited")]
    pauses: list[float] = []
    results = notify(_settings(make_settings, slack.url, retry_backoff_s=0.5), NOTE, sleep=pauses.append)
    assert [(r.delivered, r.attempts) for r in results] == [(True, 3)]
    assert len(pauses) == 2 and 0.4 <= pauses[0] <= 0.5 and 0.8 <= pauses[1] <= 1.0  # doubling, with up to 20 % jitter
    assert len(slack.received) == 1


def test_a_rejected_message_is_not_retried_and_the_url_stays_secret(make_settings, slack):
    slack.script = [(400, "invalid_payload")]
    pauses: list[float] = []
    [result] = notify(_settings(make_settings, slack.url), NOTE, sleep=pauses.append)
    assert not result.delivered and result.attempts == 1 and pauses == []
    assert result.error == "slack webhook answered 400 invalid_payload"
    assert slack.received == []


def test_an_unreachable_webhook_is_retried_then_reported(make_settings, capfd):
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    pauses: list[float] = []
    [result] = notify(_settings(make_settings, url, retries=2), NOTE, sleep=pauses.append)
    assert not result.delivered and result.attempts == 3 and len(pauses) == 2
    assert result.error.startswith("slack webhook unreachable:") and "s3cr3t" not in result.error
    out, err = capfd.readouterr()
    assert "s3cr3t" not in out + err


def test_missing_or_unknown_notifiers_are_reported_not_raised(make_settings, tmp_path):
    from mlops_cli.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"notify.notifiers: unknown notifier 'slak'; known: kafka, slack; "
        r"did you mean 'slack'\?",
    ):
        make_settings(notify={"notifiers": ["slack", "slak"]})  # a typo fails at load, not at the first rollout
    [slack] = notify(make_settings(notify={"notifiers": ["slack"]}), NOTE)
    assert not slack.delivered and "has no webhook URL" in slack.error
    missing = make_settings(notify={"notifiers": ["slack"], "slack": {"webhook_url_file": str(tmp_path / "nope")}})
    [result] = notify(missing, NOTE)
    assert "webhook_url_file" in result.error and "No such file" in result.error


def test_the_webhook_url_never_prints_with_the_settings(make_settings, slack):
    settings = _settings(make_settings, slack.url)
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in settings.model_dump_json()


@pytest.mark.parametrize(
    "bad",
    [
        f"http://127.0.0.1:9{SECRET_PATH[:-3]} x{SECRET_PATH[-3:]}",
        f"https://hooks.slack.com{SECRET_PATH}\x07",
        f"http://127.0.0.1:abc{SECRET_PATH}",
        f"ftp://hooks.slack.com{SECRET_PATH}",
        f"https://{SECRET_PATH}",
    ],
)
def test_a_malformed_webhook_url_is_a_config_error_that_does_not_echo_it(make_settings, bad, caplog, capfd):
    from mlops_cli.errors import ConfigError
    from mlops_cli.notifiers.slack import SlackNotifier

    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ConfigError) as info:
            SlackNotifier(_settings(make_settings, bad))
        [result] = notify(_settings(make_settings, bad), NOTE)
    assert not result.delivered and "webhook_url" in result.error
    out, err = capfd.readouterr()
    for text in (str(info.value), info.value.hint or "", result.error, caplog.text, out, err):
        assert "s3cr3t" not in text and "/services/" not in text


def test_send_reports_no_url_even_when_the_http_library_quotes_it(make_settings, slack, caplog, capfd):
    """http.client refuses a URL with a space with "URL can't contain control characters. '<path>'"."""
    from mlops_cli.notifiers.slack import SlackNotifier

    notifier = SlackNotifier(_settings(make_settings, slack.url))
    notifier.url = slack.url.replace("s3cr3t", "s3 cr3t")  # whatever gets past the check at construction
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(DeliveryError) as info:
            notifier.send(NOTE)
    assert info.value.retryable and str(info.value).startswith("slack webhook unreachable:")
    out, err = capfd.readouterr()
    for text in (str(info.value), caplog.text, out, err):
        assert "s3" not in text and "/services/" not in text, text


@pytest.mark.parametrize(
    "status,body,sink_down,retryable",
    [
        (403, "invalid_token", True, False),
        (404, "no_service", True, False),
        (410, "channel_is_archived", True, False),
        (400, "invalid_blocks", False, False),
        (400, "invalid_payload", False, False),
        (413, "", False, False),
        (500, "rollup_error", False, True),
        (429, "rate_limited", False, True),
    ],
)
def test_refusals_of_every_message_are_sink_down_not_dead_letters(
    make_settings, slack, status, body, sink_down, retryable
):
    from mlops_cli.notifiers.slack import SlackNotifier

    slack.script = [(status, body)]
    with pytest.raises(DeliveryError) as info:
        SlackNotifier(_settings(make_settings, slack.url)).send(NOTE)
    assert (info.value.sink_down, info.value.retryable) == (sink_down, retryable)
