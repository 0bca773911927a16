"""`mlops canary status|promote|abort`: a human's view of and say in a canary release (docs/canary.md)."""

from __future__ import annotations

import click

from ..cli import cli, command, emit, settings_from


@cli.group()
def canary() -> None:
    """The canary release of an environment (rollout.strategy canary): status, promote, abort."""


_ENV = click.option(
    "--env", default="prod", show_default=True, type=click.Choice(["prod"]), help="The environment whose canary it is."
)


@command(canary, "status")
@_ENV
def canary_status(env: str) -> None:
    """Show the canary's steps, measurements and verdicts, and its traffic share."""
    from ..canary.control import status

    emit(status(settings_from(), env))


@command(canary, "promote")
@_ENV
def canary_promote(env: str) -> None:
    """Skip the remaining steps: 100 % to the new revision, the old one removed."""
    from ..canary.control import act

    emit(act(settings_from(), env, "promote"))


@command(canary, "abort")
@_ENV
def canary_abort(env: str) -> None:
    """Abort the canary now: weight 0, the canary removed, stable serves."""
    from ..canary.control import act

    emit(act(settings_from(), env, "abort"))
