"""The long-running services: alert-relay (alerts to Slack/Kafka) and chatops (the Slack app)."""

from __future__ import annotations

import json

import click

from ..cli import _OPTIONS, cli, command, settings_from


@command(cli, "alert-relay")
@click.option("--host", help="Address to listen on [config relay.host, default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [config relay.port, default 9095].")
@click.option(
    "--sink",
    "sinks",
    multiple=True,
    help="A notifier to forward to, e.g. slack, kafka (repeatable) [config relay.sinks].",
)
@click.option(
    "--requeue-dead",
    is_flag=True,
    help="Move the dead letters back into the queue and exit (a running relay sends them).",
)
def alert_relay(host: str | None, port: int | None, sinks: tuple[str, ...], requeue_dead: bool) -> None:
    """Receive Alertmanager/Grafana webhooks and forward them to Slack and Kafka; runs until stopped."""
    from ..relay import run

    settings = settings_from(**{"relay.host": host, "relay.port": port, "relay.sinks": sinks})
    if requeue_dead:
        from ..relay import requeue_dead as requeue

        moved = requeue(settings)
        _OPTIONS["emitted"] = True
        click.echo(
            json.dumps({"requeued": moved})
            if _OPTIONS["json"]
            else ", ".join(f"{name}: {n} dead letters requeued" for name, n in moved.items())
        )
        return
    run(settings)


@command(cli, "chatops")
@click.option("--host", help="Address to listen on [config chatops.host, default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [config chatops.port, default 3000].")
@click.option(
    "--executor", type=click.Choice(["jenkins", "local"]), help="Who runs releases [config chatops.executor]."
)
def chatops(host: str | None, port: int | None, executor: str | None) -> None:
    """Serve the Slack app: /mlops commands and approval buttons in, releases out; runs until stopped."""
    from ..chatops import run

    run(
        settings_from(**{"chatops.host": host, "chatops.port": port, "chatops.executor": executor}),
        str(_OPTIONS["config"]) if _OPTIONS["config"] else None,
    )
