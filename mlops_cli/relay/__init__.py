"""`mlops alert-relay`: Alertmanager and Grafana webhooks in, Slack and Kafka (any notifier) out.

`run(settings)` checks the configuration (a token, at least one sink, each sink's settings), makes
the on-disk queue and serves the app (app.py) with uvicorn until SIGTERM/SIGINT. Alerts still queued
at shutdown stay on disk and are delivered by the next start.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..registry import load

if TYPE_CHECKING:
    from ..config import Settings

def make_notifiers(settings: "Settings") -> dict:
    from ..notifiers import NOTIFIERS

    names = settings.relay.sinks or settings.notify.notifiers
    if not names:
        raise ConfigError("the relay has nowhere to send alerts",
                          hint="set relay.sinks, e.g. [slack, kafka] (or notify.notifiers)")
    if len(set(names)) != len(names):
        raise ConfigError(f"relay.sinks names a sink twice: {', '.join(names)}")
    return {name: load("notifier", name, NOTIFIERS)(settings) for name in names}


def build(settings: "Settings"):
    """The app, its notifiers and its queue, from the settings; a ConfigError on anything wrong."""
    from prometheus_client import CollectorRegistry

    from .app import RelayConfig, create_app
    from .queue import DiskQueue

    relay = settings.relay
    token = relay.token_value()
    if not token:
        raise ConfigError("the relay needs a shared token",
                          hint="set MLOPS_RELAY__TOKEN or relay.token_file; senders send 'Authorization: Bearer <token>'")
    if relay.retry_backoff_s > relay.max_backoff_s:
        raise ConfigError("relay.retry_backoff_s is larger than relay.max_backoff_s")
    notifiers = make_notifiers(settings)
    queue_dir = relay.queue_dir if relay.queue_dir is not None else settings.workdir / "relay-queue"
    try:
        queue = DiskQueue(queue_dir, notifiers, relay.queue_max, dead_max=relay.dead_max)
    except OSError as exc:
        raise ConfigError(f"relay queue directory {queue_dir}: {exc.strerror}") from None
    config = RelayConfig(token=token, retries=relay.retries, retry_backoff_s=relay.retry_backoff_s,
                         max_backoff_s=relay.max_backoff_s, max_body_bytes=relay.max_body_bytes,
                         runbook_base_url=relay.runbook_base_url)
    return create_app(config, notifiers, queue, CollectorRegistry()), notifiers, queue


def requeue_dead(settings: "Settings") -> dict[str, int]:
    """Move every sink's dead letters back into its queue (a running relay picks them up within
    relay.max_backoff_s); how many per sink. Needs no token and contacts no sink."""
    from .queue import DiskQueue

    relay = settings.relay
    names = relay.sinks or settings.notify.notifiers
    if not names:
        raise ConfigError("the relay has no sinks: nothing to requeue", hint="set relay.sinks, e.g. [slack, kafka]")
    queue_dir = relay.queue_dir if relay.queue_dir is not None else settings.workdir / "relay-queue"
    try:
        queue = DiskQueue(queue_dir, names, relay.queue_max, dead_max=relay.dead_max)
        return {name: queue.requeue_dead(name) for name in names}
    except OSError as exc:
        raise ConfigError(f"relay queue directory {queue_dir}: {exc.strerror or type(exc).__name__}") from None


def run(settings: "Settings") -> None:
    import uvicorn

    app, notifiers, queue = build(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its connection chatter; our lines say what failed
    pending = {name: queue.depth(name) for name in notifiers}
    logging.getLogger("mlops.relay").info(
        "relaying to %s on %s:%d (queue %s, waiting: %s)", ", ".join(notifiers), settings.relay.host,
        settings.relay.port, queue.directory, ", ".join(f"{k} {v}" for k, v in pending.items()))
    try:
        config = uvicorn.Config(app, host=settings.relay.host, port=settings.relay.port, log_level="warning",
                                access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn re-raises SIGTERM/SIGINT once it has shut down: a normal stop
            if not server.started:
                raise
        except SystemExit:  # uvicorn exits (3) when it cannot bind; its own log line says why
            if server.started:
                raise
        if not server.started:
            raise ConfigError(f"the relay could not listen on {settings.relay.host}:{settings.relay.port}")
        logging.getLogger("mlops.relay").info("stopped; waiting on disk: %s", ", ".join(
            f"{name} {queue.depth(name)}" for name in notifiers))
    finally:
        for notifier in notifiers.values():
            close = getattr(notifier, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing a client of a sink that is down must not hide the exit
                    pass
