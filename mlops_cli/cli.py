"""The `mlops` command: thin commands over the library; the one place errors become exit codes."""

from __future__ import annotations

import gc
import json
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import MlopsError

# Global options: accepted before or after the command name (`mlops --json status`, `mlops status --json`).
_OPTIONS: dict[str, Any] = {"workdir": None, "config": None, "json": False, "debug": False, "emitted": False}
_OPTIONS["process"] = False  # main() runs the process's own command line (`mlops`, python -m): settings_from


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in (None, False):
            _OPTIONS[name] = value
        return value

    return callback


def common_options(fn: Callable) -> Callable:
    fn = click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember("workdir"),
        help="Work directory holding state.json, bundles and logs [default: ./.mlops].",
    )(fn)
    fn = click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember("config"),
        help="Config file [default: ./mlops.yaml if present].",
    )(fn)
    fn = click.option(
        "--json",
        "json_",
        is_flag=True,
        expose_value=False,
        callback=_remember("json"),
        help="Print the result as JSON on stdout.",
    )(fn)
    fn = click.option(
        "--debug", is_flag=True, expose_value=False, callback=_remember("debug"), help="Show tracebacks."
    )(fn)
    fn = click.option(
        "--quiet",
        "-q",
        is_flag=True,
        expose_value=False,
        callback=_quiet,
        help="No progress lines and no output of the programs stages run (buildah, pip, pytest).",
    )(fn)
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
    settings = load_settings(_OPTIONS["config"], overrides)
    if _OPTIONS["process"]:
        # The command's modules are imported and its settings built: tens of thousands of objects (classes,
        # pydantic validators) that live until the process exits. Frozen, no garbage collection walks them
        # again, the last one at exit included (30-50 ms of each `mlops <stage>` process); main() turned the
        # collector off until here (imports make no garbage worth the passes). Not in-process callers (tests,
        # main(argv)): frozen objects are never freed.
        gc.freeze()
        gc.enable()
    return settings


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
    "unit-test": ("unit_test",),
    "validate-model": (*_SOURCES, "validation", "audit"),
    "assemble-server": (*_SOURCES, "assemble"),
    "build-image": ("build",),
    "deploy-test": ("deploy", "kubernetes"),
    "smoke-test": ("smoke", "deploy"),
    "rolling-update": ("deploy", "kubernetes", "approval", "audit"),
    "rollback": ("deploy", "kubernetes"),
    "render": ("kubernetes", "deploy", *_SOURCES),
    "notify": ("notify",),
    "approval": ("approval",),
    "run": _PIPELINE,
    "register": ("store",),
    "list": ("store",),
    "show": _SOURCES,
    "status": ("deploy", "kubernetes"),
    "stop": ("deploy", "kubernetes"),
    "base-image": ("build",),
    "demo": _PIPELINE,
    "alert-relay": ("relay", "notify"),
    "chatops": ("chatops",),
    "monitor": ("monitor",),
}
READS["rolling-update"] += ("rollout", "canary_analysis", "monitor")  # rollout.strategy canary (docs/canary.md)
READS.update({"promote": ("deploy", "rollout"), "abort": ("deploy", "rollout")})


def reads_epilog(name: str) -> str:
    sections = READS.get(name, ())
    named = ", ".join(f"{s} (MLOPS_{s.upper()}{'' if s == 'model' else '__*'})" for s in sections)
    return (
        "\b\nSettings: " + (named + ", " if named else "") + "workdir (MLOPS_WORKDIR), lock_wait_s;\n"
        "each key SECTION.KEY also as MLOPS_SECTION__KEY; all keys: docs/configuration.md"
    )


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


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {message}", err=True)
    if _OPTIONS["json"] and not _OPTIONS["emitted"]:  # a result already on stdout says it all
        click.echo(json.dumps({"error": message, "exit_code": code}))
    return code


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: a half-started server is stopped, state recorded


def main(argv: list[str] | None = None) -> int:
    for key in _OPTIONS:
        _OPTIONS[key] = False if key in ("json", "debug", "emitted") else None
    _OPTIONS["process"] = argv is None
    if argv is None:
        gc.disable()  # until the command's settings are loaded (settings_from), or the command ends
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
            message = (
                f"missing command (see `{ctx.command_path} --help`)"
                if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None
                else exc.format_message()
            )
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
            exc.filename is None and exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT)
        ):
            return _internal(exc)
        if _OPTIONS["debug"]:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(
            f"{where}{exc.strerror or exc} (check the permissions and free space there; "
            "--workdir or MLOPS_WORKDIR picks another workdir)",
            74,
        )
    except Exception as exc:  # a bug, not a user error: say so, and how to see more
        return _internal(exc)
    finally:
        if argv is None:
            gc.enable()
    return 0


def _internal(exc: Exception) -> int:
    if _OPTIONS["debug"]:
        traceback.print_exc()
        return 70
    return _fail(f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)", 70)


# the subcommands register themselves on `cli` (after everything they import from here is defined)
from .commands import bootstrap, canary, model, ops, release, services, stages  # noqa: E402,F401

if __name__ == "__main__":  # python -m mlops_cli.cli: run the package's module, the one the commands are on
    from mlops_cli.cli import main as _main

    sys.exit(_main())
