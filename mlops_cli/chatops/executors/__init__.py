"""Who runs a release asked for in Slack: `jenkins` (the release job, through its remote API) or `local`
(the service runs the `mlops` stages itself). One module each, chosen by `chatops.executor`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ...backends import load

if TYPE_CHECKING:
    from ...settings import Settings

EXECUTORS = {
    "jenkins": "mlops_cli.chatops.executors.jenkins:JenkinsExecutor",
    "local": "mlops_cli.chatops.executors.local:LocalExecutor",
}


class Say(Protocol):
    """Posts one line into the release's Slack thread (with Block Kit blocks, e.g. the approval buttons)."""

    def __call__(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None: ...


class ExecutorError(Exception):
    """A release step that failed, in one line the thread shows (no secrets, no traceback)."""


@dataclass(frozen=True)
class Release:
    model: str
    env: str
    target: str | None
    user: str  # the Slack user ID who asked
    channel: str
    thread_ts: str  # the thread the outcomes go to

    @property
    def requested_by(self) -> str:
        return f"slack:{self.user}"


@dataclass(frozen=True)
class Approval:
    """What an Approve/Reject button names, once checked against the configuration."""

    job: str
    build: int
    build_url: str
    input_id: str
    requested_by: str
    model: str = ""
    digest: str = ""

    @property
    def key(self) -> str:
        return f"{self.job}#{self.build}"


class Executor(Protocol):
    name: str

    def deploy(self, release: Release, say: Say) -> None:
        """Start (jenkins) or run (local) the release; ExecutorError on a failure, nothing half-done."""

    def rollback(self, release: Release, say: Say) -> None:
        """Run release.env's previous revision again (release.model is empty)."""

    def approval(self, value: str) -> Approval:
        """The button's value checked against the configuration; ExecutorError when it does not hold."""

    def requester(self, approval: Approval) -> str:
        """Who asked for the release, as the build itself records it (the button's word is only a hint)."""

    def decide(self, approval: Approval, approve: bool, user: str) -> None:
        """Answer the build's approval gate (proceed or abort)."""


def get_executor(name: str, settings: Settings, config_file: str | None = None) -> Executor:
    return load("chatops executor", name, EXECUTORS)(settings, config_file)
