"""The `mlops` command: thin commands over the library; the one place errors become exit codes."""

from __future__ import annotations

import importlib
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import click

from . import __version__
from .errors import MlopsError
from .stages import MODULES

# Global options: accepted before or after the command name (`mlops --json status`, `mlops status --json`).
_OPTIONS = {"workdir": None, "config": None, "json": False, "debug": False, "emitted": False}


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in (None, False):
            _OPTIONS[name] = value
        return value
    return callback


def common_options(fn: Callable) -> Callable:
    fn = click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), expose_value=False,
                      callback=_remember("workdir"), help="Work directory holding state.json, bundles and logs [default: ./.mlops].")(fn)
    fn = click.option("--config", type=click.Path(dir_okay=False, path_type=Path), expose_value=False,
                      callback=_remember("config"), help="Config file [default: ./mlops.yaml if present].")(fn)
    fn = click.option("--json", "json_", is_flag=True, expose_value=False, callback=_remember("json"),
                      help="Print the result as JSON on stdout.")(fn)
    fn = click.option("--debug", is_flag=True, expose_value=False, callback=_remember("debug"),
                      help="Show tracebacks.")(fn)
    fn = click.option("--quiet", "-q", is_flag=True, expose_value=False, callback=_quiet,
                      help="No progress lines and no output of the programs stages run (buildah, pip, pytest).")(fn)
    return fn


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    from .ui import set_quiet

    if value:
        set_quiet(True)
    return value


def settings_from(**flags: Any):
    """Settings from defaults < mlops.yaml < MLOPS_* < these flags (None means not given)."""
    from .config import load_settings

    overrides: dict[str, Any] = {}
    if _OPTIONS["workdir"] is not None:
        overrides["workdir"] = _OPTIONS["workdir"]
    for dotted, value in flags.items():
        if value is None or value == () or value is False:
            continue
        node = overrides
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return load_settings(_OPTIONS["config"], overrides)


def emit(result: Any) -> None:
    _OPTIONS["emitted"] = True
    if _OPTIONS["json"]:
        click.echo(json.dumps(result.model_dump(mode="json", by_alias=True), indent=2))
    else:
        for line in result.lines():
            click.echo(line)


_SOURCES = ("model", "store", "clearml", "s3")
_PIPELINE = (*_SOURCES, "unit_test", "validation", "assemble", "build", "deploy", "smoke", "kubernetes", "audit")
# The settings sections (top-level keys of mlops.yaml) each command reads; shown in its --help.
READS: dict[str, tuple[str, ...]] = {
    "unit-test": ("unit_test",), "validate-model": (*_SOURCES, "validation", "audit"),
    "assemble-server": (*_SOURCES, "assemble"), "build-image": ("build",), "deploy-test": ("deploy", "kubernetes"),
    "smoke-test": ("smoke", "deploy"), "rolling-update": ("deploy", "kubernetes", "approval", "audit"),
    "rollback": ("deploy", "kubernetes"), "render": ("kubernetes", "deploy", *_SOURCES), "notify": ("notify",),
    "approval": ("approval",), "run": _PIPELINE, "register": ("store",), "list": ("store",), "show": _SOURCES,
    "status": ("deploy", "kubernetes"), "stop": ("deploy", "kubernetes"), "base-image": ("build",),
    "demo": _PIPELINE, "alert-relay": ("relay", "notify"), "chatops": ("chatops",), "monitor": ("monitor",),
}


def reads_epilog(name: str) -> str:
    sections = READS.get(name, ())
    named = ", ".join(f"{s} (MLOPS_{s.upper()}{'' if s == 'model' else '__*'})" for s in sections)
    return ("\b\nSettings: " + (named + ", " if named else "") + "workdir (MLOPS_WORKDIR), lock_wait_s;\n"
            "each key SECTION.KEY also as MLOPS_SECTION__KEY; all keys: docs/configuration.md")


def command(group: click.Group, name: str, **kwargs: Any) -> Callable:
    """A subcommand with the common options."""
    def decorate(fn: Callable) -> Callable:
        kwargs.setdefault("epilog", reads_epilog(name))
        return group.command(name, **kwargs)(common_options(fn))
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="mlops")
@common_options
def cli() -> None:
    """Take a trained model to a monitored inference service, one stage at a time.

    The stages, in pipeline order: unit-test, validate-model, assemble-server, build-image,
    deploy-test, smoke-test, rolling-update. Each reads and writes WORKDIR/state.json, so each
    can run as its own process (a Jenkins stage) or all at once with `mlops pipeline run`.

    \b
    Settings: defaults < mlops.yaml (--config) < MLOPS_* environment < flags. A key
    SECTION.KEY of the config file is the variable MLOPS_SECTION__KEY (double underscore
    between levels), e.g. build.registry -> MLOPS_BUILD__REGISTRY,
    deploy.test.port -> MLOPS_DEPLOY__TEST__PORT; lists and mappings as JSON.
    Every key, its default and variable: docs/configuration.md.

    \b
    Exit codes: 0 ok; 1 a check failed (validation, smoke test, build); 2 bad usage or
    configuration; 3 a stage ran before the stage it needs; 74 a file-system problem
    (read-only or full workdir); 75 temporary, worth retrying (registry down, workdir
    locked); 70 internal error (a bug: run with --debug); 130 interrupted.
    """


def _stage(name: str) -> Callable[..., Any]:
    return importlib.import_module(MODULES[name]).run


MODEL_HELP = ("Model reference: local:NAME[@VERSION] (local store, default newest version), clearml:MODEL_ID "
              "or s3://BUCKET/PREFIX (the prefix holding metadata.json) [config model, env MLOPS_MODEL].")


@command(cli, "unit-test")
@click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path), help="The model's project; runs its tests/.")
@click.option("--path", "paths", multiple=True, help="A test path for pytest (repeatable).")
def unit_test(project_dir: Optional[Path], paths: tuple[str, ...]) -> None:
    """Run the project's tests (none: skipped, or the toolkit's smoke suite with unit_test.selftest); JUnit XML in WORKDIR/reports."""
    emit(_stage("unit-test")(settings_from(**{"unit_test.project_dir": project_dir, "unit_test.paths": paths})))


@command(cli, "validate-model")
@click.option("--model", help=MODEL_HELP)
@click.option("--allow-breaking", is_flag=True, help="Accept a breaking interface change against the deployed model.")
def validate_model(model: Optional[str], allow_breaking: bool) -> None:
    """Check metrics against thresholds, the validator tag, the artifact digest and the interface."""
    emit(_stage("validate-model")(settings_from(model=model, **{"validation.allow_breaking": allow_breaking})))


@command(cli, "assemble-server")
def assemble_server() -> None:
    """Fetch the validated model and render the server bundle (spec, Dockerfile, requirements)."""
    emit(_stage("assemble-server")(settings_from()))


@command(cli, "build-image")
@click.option("--builder", help="Image builder name [config build.builder].")
def build_image(builder: Optional[str]) -> None:
    """Build and push the bundle's image; skipped while no builder is configured."""
    emit(_stage("build-image")(settings_from(**{"build.builder": builder})))


_FORCE_HELP = "kubernetes target: take over fields another field manager owns [config kubernetes.force_conflicts]."


@command(cli, "deploy-test")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
def deploy_test(force: bool) -> None:
    """Deploy the bundle to the test environment and wait until it is ready."""
    emit(_stage("deploy-test")(settings_from(**{"kubernetes.force_conflicts": force})))


@command(cli, "smoke-test")
def smoke_test() -> None:
    """Send example and invalid requests to the test deployment; check answers and p95 latency."""
    emit(_stage("smoke-test")(settings_from()))


@command(cli, "rolling-update")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@click.option("--approved-by", help="Who approved this release at the approval gate (recorded in state and the audit trail).")
@click.option("--triggered-by", help="Who asked for this release, e.g. slack:U123 or jenkins:bob (recorded likewise).")
def rolling_update(force: bool, approved_by: Optional[str], triggered_by: Optional[str]) -> None:
    """Replace production with the smoke-tested bundle, with no failed request; keeps the old one on failure."""
    emit(_stage("rolling-update")(settings_from(**{"kubernetes.force_conflicts": force,
                                                   "approval.approved_by": approved_by,
                                                   "approval.triggered_by": triggered_by})))



@command(cli, "rollback")
@click.option("--env", required=True, type=click.Choice(["test", "prod"]), help="The environment to roll back.")
def rollback(env: str) -> None:
    """Run the environment's previous revision again, as `kubectl rollout undo` (kubernetes target)."""
    from .stages import rollback as rollback_stage

    emit(rollback_stage.run(settings_from(), env))


@command(cli, "render")
@click.option("--env", type=click.Choice(["test", "prod"]), help="The environment to render for.")
@click.option("--kustomize", is_flag=True, help="Write a Kustomize base and overlays/ENV for every environment instead.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory to write into.")
@click.option("--image", help="REPOSITORY@sha256:DIGEST to deploy [default: the image in state].")
@click.option("--allow-tag", is_flag=True, help="Accept --image as a moving tag for prod.")
@click.option("--model", "model_ref", help="Model reference whose metadata labels the objects [default: state's model].")
def render(env: Optional[str], kustomize: bool, out: Path, image: Optional[str], allow_tag: bool,
           model_ref: Optional[str]) -> None:
    """Write the environment's validated Kubernetes/OpenShift manifests (for GitOps; no state needed with --image)."""
    from . import gitops, render as render_lib

    if kustomize and env:
        raise click.UsageError("--kustomize writes every environment; give --env or --kustomize, not both")
    if kustomize:
        emit(gitops.run(settings_from(), out, image=image, allow_tag=allow_tag, model_ref=model_ref))
    else:
        emit(render_lib.run(settings_from(), env, out, image=image, allow_tag=allow_tag, model_ref=model_ref))

@command(cli, "notify")
@click.option("--event", required=True, type=click.Choice(["started", "success", "failure", "aborted",
                                                           "approval-requested", "approved", "rejected"]),
              help="What happened to the release.")
@click.option("--channel", envvar="SLACK_CHANNEL", help="Slack channel to post in (with notify.slack.bot_token) "
              "[env SLACK_CHANNEL, else config notify.slack.channel].")
@click.option("--thread-ts", envvar="SLACK_THREAD_TS", help="Slack thread to reply in, the ts of its first message [env SLACK_THREAD_TS].")
@click.option("--build-url", help="The CI build [env BUILD_URL].")
@click.option("--job", help="The CI job [env JOB_NAME].")
@click.option("--build", type=int, help="The CI build number [env BUILD_NUMBER].")
@click.option("--triggered-by", envvar="TRIGGERED_BY", help="Who asked for the release [env TRIGGERED_BY].")
@click.option("--requested-by", envvar="REQUESTED_BY",
              help="Who the release was requested for, as the trigger gave it (the approval buttons carry it) [env REQUESTED_BY].")
@click.option("--approved-by", envvar="APPROVED_BY", help="Who approved it; for rejected: who rejected it [env APPROVED_BY].")
@click.option("--stage", help="The stage that failed [default: from state].")
@click.option("--reason", help="One line on why [default: the failed stage's message from state].")
def notify_cmd(event: str, **given: Any) -> None:
    """Send a release outcome (model, digest, failed stage, build, who) to the configured notifiers."""
    from . import notify as notify_lib

    emit(notify_lib.run(settings_from(), notify_lib.NotifyRequest.from_ci(event, **given)))


@command(cli, "approval")
@click.option("--decision", required=True, type=click.Choice(["approved", "rejected", "timed-out"]),
              help="What the approval gate decided.")
@click.option("--by", help="Who decided (none for a timeout).")
@click.option("--triggered-by", envvar="TRIGGERED_BY", help="Who asked for the release [env TRIGGERED_BY].")
def approval(decision: str, by: Optional[str], triggered_by: Optional[str]) -> None:
    """Record the approval gate's decision in state (a rejection or timeout: not deployed, and who/when)."""
    from .audit import record_approval_result

    emit(record_approval_result(settings_from(), decision, by, triggered_by))


@cli.group()
def pipeline() -> None:
    """Run all stages in order."""


@command(pipeline, "run")
@click.option("--model", help=MODEL_HELP)
@click.option("--allow-breaking", is_flag=True, help="Accept a breaking interface change against the deployed model.")
def pipeline_run(model: Optional[str], allow_breaking: bool) -> None:
    """Run the seven stages, stop at the first failure, print each stage's status and time."""
    from . import pipeline as pipeline_lib

    result = pipeline_lib.run(settings_from(model=model, **{"validation.allow_breaking": allow_breaking}))
    emit(result)
    pipeline_lib.raise_if_failed(result)


@cli.group()
def model() -> None:
    """Manage models in the local store."""


def _metric(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    metrics = {}
    for item in values:
        key, sep, raw = item.partition("=")
        try:
            metrics[key.strip()] = float(raw)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not NAME=NUMBER") from None
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not NAME=NUMBER")
    return metrics


@command(model, "register")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name.")
@click.option("--framework", type=click.Choice(["sklearn", "onnx", "python"]), help="Default: from the file's suffix.")
@click.option("--task", type=click.Choice(["classification", "regression"]), default="classification", show_default=True,
              help="What the model predicts: a class or a number.")
@click.option("--metrics", "metrics", multiple=True, callback=_metric, metavar="NAME=VALUE", help="A metric (repeatable).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--schema", "schema_file", type=click.Path(dir_okay=False, path_type=Path), help="JSON/YAML with inputs and outputs.")
@click.option("--examples", "examples_file", type=click.Path(dir_okay=False, path_type=Path), help="JSON/YAML example requests.")
@click.option("--reference", "reference_file", type=click.Path(dir_okay=False, path_type=Path), help="Training data CSV, or JSON statistics.")
@click.option("--labels", help="Class labels in the model's class order, comma-separated.")
@click.option("--class-name", help="For --framework python: the model class in the file.")
@click.option("--modules", "modules_file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON/YAML: preprocessing settings, outlier_detector, user_modules (files relative to it).")
def model_register(file: Path, **kwargs: Any) -> None:
    """Store FILE content-addressed by sha256, with its metadata, as the next version of --name."""
    from .register import RegisterRequest, register

    labels = kwargs.pop("labels")
    req = RegisterRequest(artifact=file, labels=[s.strip() for s in labels.split(",")] if labels else None,
                          tags=list(kwargs.pop("tags")), **kwargs)
    meta = register(settings_from(), req)
    if _OPTIONS["json"]:
        click.echo(meta.model_dump_json(by_alias=True, indent=2))
    else:
        click.echo(f"registered local:{meta.name}@{meta.version} (sha256:{meta.sha256[:12]})")


@command(model, "list")
def model_list() -> None:
    """List every version in the local store [config store.path, default WORKDIR/store]."""
    from .models import list_models

    emit(list_models(settings_from()))


@command(model, "show")
@click.argument("reference", required=False)
def model_show(reference: Optional[str]) -> None:
    """Show a model's metadata from its source: REFERENCE is local:NAME[@VERSION], clearml:MODEL_ID or
    s3://BUCKET/PREFIX [default: config model / MLOPS_MODEL]; reads the store, clearml and s3 sections."""
    from .models import show_model

    emit(show_model(settings_from(), reference))


def lenient_settings() -> tuple[Any, list[str]]:
    """Settings for status/stop, which must work when mlops.yaml or MLOPS_* is broken: then the
    defaults (with --workdir) and the problem in one line."""
    from .errors import ConfigError

    try:
        return settings_from(), []
    except ConfigError as exc:
        from .config import Settings

        workdir = Path(_OPTIONS["workdir"] or Settings.model_fields["workdir"].default)
        return Settings(workdir=workdir), [f"{exc.message}; using the default settings (workdir {workdir})"]


_MOVE_ASIDE = click.option("--move-aside-corrupt-state", "move_aside", is_flag=True,
                           help="If state.json is not valid, rename it to state.json.corrupt-<time> (never done unasked).")


@command(cli, "status")
@_MOVE_ASIDE
def status(move_aside: bool) -> None:
    """Show the state and what really runs: model, bundle, deployments, disagreements, stage history."""
    from .status import status as status_lib

    settings, problems = lenient_settings()
    emit(status_lib(settings, problems, move_aside))


@command(cli, "stop")
@click.option("--env", help="Stop only this environment (test or prod).")
@_MOVE_ASIDE
def stop(env: Optional[str], move_aside: bool) -> None:
    """Stop the servers of this workdir (what state names and any of ours found running)."""
    from .status import stop as stop_lib

    settings, problems = lenient_settings()
    emit(stop_lib(settings, env, problems, move_aside))


@command(cli, "base-image")
@click.option("--name", default="localhost/mlops-python-base:bookworm", show_default=True, help="Image name to commit.")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite for debootstrap.")
@click.option("--mirror", help="Debian mirror URL for debootstrap [default: debootstrap's].")
def base_image(name: str, suite: str, mirror: Optional[str]) -> None:
    """Make a Python base image from Debian packages with debootstrap and buildah (no Docker Hub)."""
    from .baseimage import build_base_image

    emit(build_base_image(settings_from(), name=name, suite=suite, mirror=mirror))


@command(cli, "demo")
@click.option("--port", type=click.IntRange(1, 65534),
              help="Serve prod on PORT and test on PORT+1 [config deploy.prod.port / deploy.test.port, default 8701 / 8700].")
def demo(port: Optional[int]) -> None:
    """Train a small iris model, register it and run the whole pipeline; leaves the test and prod
    servers running (stop them with `mlops stop --workdir WORKDIR`). Reads every section the
    pipeline reads; thresholds default to accuracy and f1_macro >= 0.9."""
    from . import demo as demo_lib
    from .pipeline import raise_if_failed

    result = demo_lib.run(settings_from(**{"deploy.prod.port": port, "deploy.test.port": port and port + 1}))
    emit(result)
    raise_if_failed(result.pipeline)


@command(cli, "alert-relay")
@click.option("--host", help="Address to listen on [config relay.host, default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [config relay.port, default 9095].")
@click.option("--sink", "sinks", multiple=True, help="A notifier to forward to, e.g. slack, kafka (repeatable) [config relay.sinks].")
@click.option("--requeue-dead", is_flag=True, help="Move the dead letters back into the queue and exit (a running relay sends them).")
def alert_relay(host: Optional[str], port: Optional[int], sinks: tuple[str, ...], requeue_dead: bool) -> None:
    """Receive Alertmanager/Grafana webhooks and forward them to Slack and Kafka; runs until stopped."""
    from .relay import run

    settings = settings_from(**{"relay.host": host, "relay.port": port, "relay.sinks": sinks})
    if requeue_dead:
        from .relay import requeue_dead as requeue

        moved = requeue(settings)
        _OPTIONS["emitted"] = True
        click.echo(json.dumps({"requeued": moved}) if _OPTIONS["json"]
                   else ", ".join(f"{name}: {n} dead letters requeued" for name, n in moved.items()))
        return
    run(settings)


@command(cli, "chatops")
@click.option("--host", help="Address to listen on [config chatops.host, default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [config chatops.port, default 3000].")
@click.option("--executor", type=click.Choice(["jenkins", "local"]), help="Who runs releases [config chatops.executor].")
def chatops(host: Optional[str], port: Optional[int], executor: Optional[str]) -> None:
    """Serve the Slack app: /mlops commands and approval buttons in, releases out; runs until stopped."""
    from .chatops import run

    run(settings_from(**{"chatops.host": host, "chatops.port": port, "chatops.executor": executor}),
        str(_OPTIONS["config"]) if _OPTIONS["config"] else None)


@command(cli, "monitor")
@click.option("--url", help="The model server's base URL [config monitor.url, default: the prod deployment].")
@click.option("--prometheus", "prometheus_url", help="Prometheus base URL to read firing alerts from [config monitor.prometheus_url].")
@click.option("--job", help="With --prometheus: only the alerts of this job (service).")
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True, help="How many alerts to show.")
@click.option("--window", "window_s", type=click.FloatRange(0.1, 3600), help="Without --prometheus: seconds between the two scrapes the figures come from [config monitor.window_s, default 10].")
def monitor(url: Optional[str], prometheus_url: Optional[str], job: Optional[str], top: int,
            window_s: Optional[float]) -> None:
    """Print the live PSI per feature and the top alerts of a deployed model server."""
    from .monitor import snapshot

    emit(snapshot(settings_from(**{"monitor.url": url, "monitor.prometheus_url": prometheus_url,
                                   "monitor.window_s": window_s}), job=job, top=top))


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {message}", err=True)
    if _OPTIONS["json"] and not _OPTIONS["emitted"]:  # a result already on stdout says it all
        click.echo(json.dumps({"error": message, "exit_code": code}))
    return code


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: a half-started server is stopped, state recorded


def main(argv: Optional[list[str]] = None) -> int:
    for key in _OPTIONS:
        _OPTIONS[key] = False if key in ("json", "debug", "emitted") else None
    from .ui import set_quiet

    set_quiet(False)
    signal.signal(signal.SIGTERM, _terminated)  # Jenkins aborts a build with SIGTERM
    try:
        cli.main(args=argv, prog_name="mlops", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _fail("interrupted", 130)
    except click.ClickException as exc:
        exc.show()
        if _OPTIONS["json"] or "--json" in (sys.argv[1:] if argv is None else argv):
            ctx = getattr(exc, "ctx", None)
            message = (f"missing command (see `{ctx.command_path} --help`)" if type(exc).__name__ == "NoArgsIsHelpError"
                       and ctx is not None else exc.format_message())
            click.echo(json.dumps({"error": " ".join(message.split()), "exit_code": exc.exit_code}))
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except MlopsError as exc:
        if _OPTIONS["debug"]:
            traceback.print_exc()
        return _fail(str(exc), exc.exit_code)
    except OSError as exc:  # the file system refused (read-only, full, permissions): EX_IOERR, not a bug
        import errno

        if isinstance(exc, (ConnectionError, TimeoutError)) or (
                exc.filename is None and exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT)):
            return _internal(exc)
        if _OPTIONS["debug"]:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc} (check the permissions and free space there; "
                     "--workdir or MLOPS_WORKDIR picks another workdir)", 74)
    except Exception as exc:  # a bug, not a user error: say so, and how to see more
        return _internal(exc)
    return 0


def _internal(exc: Exception) -> int:
    if _OPTIONS["debug"]:
        traceback.print_exc()
        return 70
    return _fail(f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)", 70)


if __name__ == "__main__":
    sys.exit(main())
