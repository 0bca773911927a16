"""`mlops chatops`: releases from Slack. The /mlops slash command and its buttons in, Jenkins (or the
local pipeline) and the release thread out.

`build(settings)` checks the configuration (signing secret, bot token, the executor's settings, at
least one user or group with a role) and makes the app (app.py); `run(settings)` serves it with
uvicorn (TLS when chatops.tls_cert_file is set) until SIGTERM/SIGINT. Keep one replica: the replay
and retry memory is the process's own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..extras import require

if TYPE_CHECKING:
    from ..settings import Settings


def build(settings: Settings, config_file: str | None = None):
    """The app and its service, from the settings; a ConfigError on anything wrong."""
    require(("slack_sdk",), "mlops chatops is a Slack app", "chatops")
    require(("uvicorn", "starlette", "prometheus_client"), "mlops chatops is a server", "serve")
    from prometheus_client import CollectorRegistry

    from . import views
    from .app import Service, create_app, default_audit_path
    from .audit import AuditLog
    from .auth import Authoriser
    from .executors import get_executor
    from .guard import RequestGuard
    from .slack import Slack

    cfg = settings.chatops
    secret = cfg.signing_secret_value()
    if not secret:
        raise ConfigError(
            "chatops needs the Slack app's signing secret",
            hint="set MLOPS_CHATOPS__SIGNING_SECRET or chatops.signing_secret_file",
        )
    token = cfg.bot_token_value()
    if not token:
        raise ConfigError(
            "chatops needs the Slack app's bot token (xoxb-...)",
            hint="set MLOPS_CHATOPS__BOT_TOKEN or chatops.bot_token_file",
        )
    if not cfg.users and not cfg.groups:
        raise ConfigError(
            "chatops gives nobody a role: every command would be refused",
            hint="set chatops.users (Slack user ID -> [viewer, deployer, approver]) or chatops.groups",
        )
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        raise ConfigError("chatops.tls_cert_file and chatops.tls_key_file go together")
    for key in ("tls_cert_file", "tls_key_file"):
        path = getattr(cfg, key)
        if path is not None and not path.is_file():
            raise ConfigError(f"chatops.{key} {path} does not exist")
    executor = get_executor(cfg.executor, settings, config_file)
    workdir = cfg.local.workdir or settings.workdir
    # with the kubernetes target and a fixed Deployment name, `status` asks the cluster; else the workdir's state
    cluster = settings.deploy.target == "kubernetes" and bool(settings.kubernetes.name)
    audit = AuditLog(cfg.audit_log or default_audit_path(settings.workdir))
    service = Service(
        guard=RequestGuard(secret),
        authoriser=Authoriser(cfg.users, cfg.groups, cfg.team_id, cfg.channels, cfg.four_eyes),
        executor=executor,
        slack=Slack(token, cfg.slack_api_url, cfg.response_url_prefix),
        audit=audit,
        default_env=cfg.default_env,
        queue_max=cfg.queue_max,
        workers=cfg.workers,
        max_body_bytes=cfg.max_body_bytes,
        group_refresh_s=cfg.group_refresh_s,
        status=lambda env: (
            views.cluster_status_text(settings, env, audit.entries())
            if cluster
            else views.status_text(workdir, env, audit.entries())
        ),
        models=lambda name: views.models_text(settings, name),
    )
    return create_app(service, CollectorRegistry()), service


def run(settings: Settings, config_file: str | None = None) -> None:
    import uvicorn

    app, service = build(settings, config_file)
    cfg = settings.chatops
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlops.chatops").info(
        "chatops on %s://%s:%d, executor %s, %d users and %d groups with roles",
        "https" if cfg.tls_cert_file else "http",
        cfg.host,
        cfg.port,
        service.executor.name,
        len(cfg.users),
        len(cfg.groups),
    )
    tls = bool(cfg.tls_cert_file)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=str(cfg.tls_cert_file) if tls else None,
        ssl_keyfile=str(cfg.tls_key_file) if tls else None,
    )
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
        raise ConfigError(f"chatops could not listen on {cfg.host}:{cfg.port}")
