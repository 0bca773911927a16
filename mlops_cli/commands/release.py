"""A release's outcome and approval gate, as the CI pipeline (Jenkinsfile) reports them: notify, approval."""

from __future__ import annotations

from typing import Any

import click

from ..cli import cli, command, emit, settings_from


@command(cli, "notify")
@click.option(
    "--event",
    required=True,
    type=click.Choice(["started", "success", "failure", "aborted", "approval-requested", "approved", "rejected"]),
    help="What happened to the release.",
)
@click.option(
    "--channel",
    envvar="SLACK_CHANNEL",
    help="Slack channel to post in (with notify.slack.bot_token) "
    "[env SLACK_CHANNEL, else config notify.slack.channel].",
)
@click.option(
    "--thread-ts",
    envvar="SLACK_THREAD_TS",
    help="Slack thread to reply in, the ts of its first message [env SLACK_THREAD_TS].",
)
@click.option("--build-url", help="The CI build [env BUILD_URL].")
@click.option("--job", help="The CI job [env JOB_NAME].")
@click.option("--build", type=int, help="The CI build number [env BUILD_NUMBER].")
@click.option("--triggered-by", envvar="TRIGGERED_BY", help="Who asked for the release [env TRIGGERED_BY].")
@click.option(
    "--requested-by",
    envvar="REQUESTED_BY",
    help="Who the release was requested for, as the trigger gave it (the approval buttons carry it) [env REQUESTED_BY].",
)
@click.option(
    "--approved-by", envvar="APPROVED_BY", help="Who approved it; for rejected: who rejected it [env APPROVED_BY]."
)
@click.option("--stage", help="The stage that failed [default: from state].")
@click.option("--reason", help="One line on why [default: the failed stage's message from state].")
def notify_cmd(event: str, **given: Any) -> None:
    """Send a release outcome (model, digest, failed stage, build, who) to the configured notifiers."""
    from .. import notify as notify_lib

    emit(notify_lib.run(settings_from(), notify_lib.NotifyRequest.from_ci(event, **given)))


@command(cli, "approval")
@click.option(
    "--decision",
    required=True,
    type=click.Choice(["approved", "rejected", "timed-out"]),
    help="What the approval gate decided.",
)
@click.option("--by", help="Who decided (none for a timeout).")
@click.option("--triggered-by", envvar="TRIGGERED_BY", help="Who asked for the release [env TRIGGERED_BY].")
def approval(decision: str, by: str | None, triggered_by: str | None) -> None:
    """Record the approval gate's decision in state (a rejection or timeout: not deployed, and who/when)."""
    from ..audit import record_approval_result

    emit(record_approval_result(settings_from(), decision, by, triggered_by))
