"""`mlops alert-relay`: Alertmanager and Grafana webhooks in, Slack and Kafka (any notifier) out.

`run(settings)` checks the configuration (a token, at least one sink, each sink's settings, TLS or
an explicitly insecure loopback address), makes the on-disk queue and serves the app (app.py) with
uvicorn until SIGTERM/SIGINT, on relay.port and, when set, relay.metrics_port (which then alone
serves /metrics). Alerts still queued at shutdown stay on disk and are delivered by the next start.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from ..backends import load
from ..errors import ConfigError
from ..extras import require
from ..settings import is_loopback

if TYPE_CHECKING:
    from ..settings import Settings


def make_notifiers(settings: Settings) -> dict:
    from ..notifiers import NOTIFIERS

    names = settings.relay.sinks or settings.notify.notifiers
    if not names:
        raise ConfigError(
            "the relay has nowhere to send alerts", hint="set relay.sinks, e.g. [slack, kafka] (or notify.notifiers)"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"relay.sinks names a sink twice: {', '.join(names)}")
    return {name: load("notifier", name, NOTIFIERS)(settings) for name in names}


def listeners(settings: Settings) -> list[tuple[str, int]]:
    """The (host, port) pairs the relay listens on: the webhook port, then metrics_port if set."""
    relay = settings.relay
    out = [(relay.host, relay.port)]
    if relay.metrics_port is not None:
        out.append((relay.metrics_host or relay.host, relay.metrics_port))
        if relay.metrics_port == relay.port:  # the app tells the two apart by the port a request came in on
            raise ConfigError(
                f"relay.metrics_port {relay.metrics_port} is the webhook port",
                hint="choose another port for /metrics, or leave relay.metrics_port unset",
            )
    return out


def check_transport(settings: Settings) -> None:
    """Tokens only over TLS: a certificate and key, or plain http on loopback addresses with relay.insecure."""
    relay = settings.relay
    if (relay.tls_cert_file is None) != (relay.tls_key_file is None):
        raise ConfigError("relay.tls_cert_file and relay.tls_key_file go together", hint="set both, or neither")
    if relay.tls_cert_file is not None:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(relay.tls_cert_file, relay.tls_key_file)
        except ssl.SSLError as exc:  # (an OSError too)
            raise ConfigError(
                f"relay TLS certificate {relay.tls_cert_file} / key {relay.tls_key_file} not usable "
                f"({exc.reason or exc})",
                hint="a PEM certificate (chain) and its PEM private key",
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"relay TLS certificate {relay.tls_cert_file} / key {relay.tls_key_file}: {exc.strerror or exc}"
            ) from None
        return
    public = [host for host, _ in listeners(settings) if not is_loopback(host)]
    if public:
        raise ConfigError(
            f"the relay would take its token over plain http on {public[0]}",
            hint="set relay.tls_cert_file and relay.tls_key_file (plain http only on a loopback "
            "address, with relay.insecure: true)",
        )
    if not relay.insecure:
        raise ConfigError(
            "the relay has no TLS certificate",
            hint="set relay.tls_cert_file and relay.tls_key_file, or, on this loopback address only, "
            "relay.insecure: true (MLOPS_RELAY__INSECURE=true)",
        )


def build(settings: Settings):
    """The app, its notifiers and its queue, from the settings; a ConfigError on anything wrong."""
    require(("uvicorn", "starlette", "prometheus_client"), "the alert relay is a server", "serve")
    from prometheus_client import CollectorRegistry

    from .app import RelayConfig, create_app
    from .queue import DiskQueue, QueueBusy

    relay = settings.relay
    token = relay.token_value()
    if not token:
        raise ConfigError(
            "the relay needs a shared token",
            hint="set MLOPS_RELAY__TOKEN or relay.token_file; senders send 'Authorization: Bearer <token>'",
        )
    if relay.retry_backoff_s > relay.max_backoff_s:
        raise ConfigError("relay.retry_backoff_s is larger than relay.max_backoff_s")
    check_transport(settings)
    notifiers = make_notifiers(settings)
    queue_dir = relay.queue_dir if relay.queue_dir is not None else settings.workdir / "relay-queue"
    try:
        queue = DiskQueue(queue_dir, notifiers, relay.queue_max, dead_max=relay.dead_max, exclusive=True)
    except QueueBusy as exc:
        raise ConfigError(str(exc), hint="give each relay its own relay.queue_dir") from None
    except OSError as exc:
        raise ConfigError(f"relay queue directory {queue_dir}: {exc.strerror}") from None
    config = RelayConfig(
        token=token,
        retries=relay.retries,
        retry_backoff_s=relay.retry_backoff_s,
        max_backoff_s=relay.max_backoff_s,
        max_body_bytes=relay.max_body_bytes,
        runbook_base_url=relay.runbook_base_url,
        metrics_token=relay.metrics_token_value(),
        metrics_port=relay.metrics_port,
    )
    return create_app(config, notifiers, queue, CollectorRegistry()), notifiers, queue


def requeue_dead(settings: Settings) -> dict[str, int]:
    """Move every sink's dead letters back into its queue (a running relay picks them up within
    relay.max_backoff_s); how many per sink. Needs no token and contacts no sink."""
    from .queue import DiskQueue

    relay = settings.relay
    names = relay.sinks or settings.notify.notifiers
    if not names:
        raise ConfigError("the relay has no sinks: nothing to requeue", hint="set relay.sinks, e.g. [slack, kafka]")
    queue_dir = relay.queue_dir if relay.queue_dir is not None else settings.workdir / "relay-queue"
    try:
        # beside a running relay: neither owns the directory nor cleans up (its writes under way are .tmp files)
        queue = DiskQueue(queue_dir, names, relay.queue_max, dead_max=relay.dead_max, clean=False)
        return {name: queue.requeue_dead(name) for name in names}
    except OSError as exc:
        raise ConfigError(f"relay queue directory {queue_dir}: {exc.strerror or type(exc).__name__}") from None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the relay could not listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run(settings: Settings) -> None:
    import uvicorn

    app, notifiers, queue = build(settings)
    relay = settings.relay
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its connection chatter; our lines say what failed
    sockets: list[socket.socket] = []
    try:
        for host, port in listeners(settings):
            sockets.append(_bind(host, port))
        scheme = "https" if relay.tls_cert_file is not None else "http"
        pending = {name: queue.depth(name) for name in notifiers}
        where = f"{scheme}://{relay.host}:{relay.port}" + (
            f" (metrics on {scheme}://{listeners(settings)[1][0]}:{relay.metrics_port})" if relay.metrics_port else ""
        )
        logging.getLogger("mlops.relay").info(
            "relaying to %s on %s (queue %s, waiting: %s)",
            ", ".join(notifiers),
            where,
            queue.directory,
            ", ".join(f"{k} {v}" for k, v in pending.items()),
        )
        tls = relay.tls_cert_file is not None
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ssl_certfile=str(relay.tls_cert_file) if tls else None,
            ssl_keyfile=str(relay.tls_key_file) if tls else None,
        )
        server = uvicorn.Server(config)
        try:
            server.run(sockets=sockets)
        except KeyboardInterrupt:  # uvicorn re-raises SIGTERM/SIGINT once it has shut down: a normal stop
            if not server.started:
                raise
        except SystemExit:  # uvicorn exits (3) when it cannot start; its own log line says why
            if server.started:
                raise
        if not server.started:
            raise ConfigError(f"the relay could not listen on {relay.host}:{relay.port}")
        logging.getLogger("mlops.relay").info(
            "stopped; waiting on disk: %s", ", ".join(f"{name} {queue.depth(name)}" for name in notifiers)
        )
    finally:
        for sock in sockets:
            sock.close()
        queue.close()
        for notifier in notifiers.values():
            close = getattr(notifier, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing a client of a sink that is down must not hide the exit
                    pass
