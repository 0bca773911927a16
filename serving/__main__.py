"""``python -m serving BUNDLE_DIR [--host 127.0.0.1] [--port 8080] [--ready-file PATH] [--log-level info]
[--instance TOKEN] [--revision N] [--await-handover] [--drain-until-idle]``

``--instance``/``--revision`` name the server for the deployer that started it: both are reported on
``/health/ready`` (with the pid), so a deployer counts a ready answer only from its own process.
``--await-handover`` loads the model, then listens only on SIGUSR1 (:mod:`serving.handover`).

Exit codes: 0 stopped cleanly (after SIGTERM/SIGINT and draining); 1 the bundle cannot be served
(invalid spec.json, missing or altered model artifact, model fails to load); 2 usage error or
the port cannot be bound. Failures print one line, ``error: ...``, on stderr; logs go to stderr,
one line per event, with no access log unless ``--log-level debug``. A server stopped before it
listened (a stop signal while loading or awaiting the handover) exits 1 without taking a connection.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class OneLineFormatter(logging.Formatter):
    """One line per event: an exception becomes ``Type: message (file:line)`` after the message."""

    def formatException(self, ei) -> str:
        exc_type, exc, tb = ei
        where = ""
        while tb is not None:
            where = f" ({Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})"
            tb = tb.tb_next
        return f"{getattr(exc_type, '__name__', exc_type)}: {' '.join(str(exc).split())}{where}"

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(super().format(record).splitlines())


def configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if level <= logging.DEBUG:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own info lines repeat ours; its warnings and errors still show
    logging.getLogger("uvicorn.error").setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    logging.captureWarnings(True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description="Serve a model bundle over HTTP.")
    parser.add_argument("bundle_dir", metavar="BUNDLE_DIR", type=Path, help="the bundle (holds spec.json)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default: 8080; 0 picks one)")
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help='written atomically once serving: {"pid", "host", "port", "sha256"}',
    )
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="default: info")
    parser.add_argument("--instance", default=None, help="a token naming this server, reported on /health/ready")
    parser.add_argument(
        "--revision", type=int, default=None, help="the deployer's revision number, reported on /health/ready"
    )
    parser.add_argument(
        "--await-handover",
        action="store_true",
        help="load the model, write the ready file with listening: false, listen only on SIGUSR1",
    )
    parser.add_argument(
        "--drain-until-idle",
        action="store_true",
        default=os.environ.get("SERVING_DRAIN_UNTIL_IDLE") == "1",
        help="on SIGTERM drain only while connections are open (at most drain_seconds): for "
        "deployers whose newer server has taken the port over (also: SERVING_DRAIN_UNTIL_IDLE=1, "
        "which servers that predate it ignore)",
    )
    args = parser.parse_args(argv)
    if not args.bundle_dir.is_dir():
        parser.error(f"BUNDLE_DIR {args.bundle_dir}: not a directory")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be 0-65535")
    return args


def main(argv: list[str] | None = None) -> int:
    # No collections while importing and loading the model: most of what they allocate lives as
    # long as the process, and the collector's passes over it are ~10 % of the start-up. The
    # server freezes it all and turns the collector back on before it listens (serving.server).
    gc.disable()
    args = parse_args(argv)
    level = getattr(logging, args.log_level.upper())
    configure_logging(level)

    import prometheus_client  # imported here: `--help` and usage errors stay fast

    from serving.app import create_app
    from serving.errors import BundleError
    from serving.server import serve
    from serving.sockets import BindError, bind_listener
    from serving.spec import load_spec

    prometheus_client.disable_created_metrics()  # no *_created series: half the scrape size
    try:
        spec = load_spec(args.bundle_dir)
        app = create_app(spec, args.bundle_dir, prometheus_client.CollectorRegistry())
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    identity = {k: v for k, v in (("instance", args.instance), ("revision", args.revision)) if v is not None}
    app.state.serving.identity.update(identity)
    if args.await_handover:
        from serving.handover import Handover

        app.state.serving.handover = Handover(
            args.ready_file, {"pid": os.getpid(), **identity, "sha256": spec.model.sha256}
        )
        app.state.serving.handover.install()
    try:
        sock = bind_listener(args.host, args.port)
    except BindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = serve(
        app,
        sock,
        host=args.host,
        log_level=level,
        drain_seconds=spec.server.drain_seconds,
        sha256=spec.model.sha256,
        ready_file=args.ready_file,
        limits=spec.server,
        drain_until_idle=args.drain_until_idle,
    )
    if code and app.state.serving.load_error is not None:
        print(f"error: {app.state.serving.load_error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
