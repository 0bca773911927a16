"""Two smoke-tested revisions of the iris model, prepared once per test module for the canary tests.

Preparing them (validate, assemble, deploy-test, smoke-test, twice) is what costs; each test then
gets its own workdir whose prod serves version 1 (a real local server started by the local target)
and whose state holds version 2, smoke-tested and ready for `rolling-update`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import free_port, register_iris


@dataclass(frozen=True)
class Prepared:
    root: Path
    state: dict[str, Any]  # state.json with version 2 validated, assembled and smoke-tested; nothing deployed
    v1: dict[str, Any]  # the deployment record of version 1 (its bundle)


def prepare_two(root: Path, first: Path, second: Path, **register: Any) -> Prepared:
    from mlops_cli.config import load_settings
    from mlops_cli.stages import assemble_server, deploy_to_test_env, rolling_update, smoke, validate_model
    from mlops_cli.state import State
    from mlops_cli.status import stop

    flags = {
        "workdir": root / "work",
        "deploy": {"test": {"port": free_port()}, "prod": {"port": free_port()}},
        "validation": {"allow_no_thresholds": True},
    }
    base = load_settings(None, flags, environ={})
    try:
        s1 = load_settings(None, {**flags, "model": register_iris(base, first, **register)}, environ={})
        for stage in (validate_model, assemble_server, deploy_to_test_env, smoke, rolling_update):
            stage.run(s1)
        v1 = State.load(base.workdir).deployments["prod"].model_dump(mode="json", by_alias=True)
        s2 = load_settings(None, {**flags, "model": register_iris(base, second, **register)}, environ={})
        for stage in (validate_model, assemble_server, deploy_to_test_env, smoke):
            stage.run(s2)
    finally:
        stop(base)
    state = State.load(base.workdir)
    for part in (state.deployments, state.previous_deployments, state.rollouts, state.intents):
        part.clear()
    return Prepared(root=root, state=state.model_dump(mode="json", by_alias=True), v1=v1)


def prod_serving_v1(prepared: Prepared, settings) -> None:
    """settings' workdir: state of `prepared`, and prod serving version 1 on settings' prod port."""
    from mlops_cli.state import DeploymentRecord, State
    from mlops_cli.targets import Release
    from mlops_cli.targets.local import LocalTarget

    rollout = LocalTarget(settings).deploy("prod", Release(bundle=Path(prepared.v1["bundle_path"])), None)
    state = State.model_validate(prepared.state)
    state.deployments["prod"] = DeploymentRecord.model_validate(
        {
            **prepared.v1,
            "url": rollout.url,
            "pid": rollout.pid,
            "handle": rollout.handle,
            "log_path": rollout.log_path,
            "revision": rollout.revision,
            "previous_revision": None,
        }
    )
    state.save(settings.workdir)
