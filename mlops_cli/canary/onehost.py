"""Helpers shared by the one-machine canaries (local and container targets): free ports, the
target's own JSON files, PromQL selectors and the Prometheus file_sd targets labelled by track."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StageFailed
from ..ui import progress
from . import haproxy

if TYPE_CHECKING:
    from ..targets import Canary, CanaryMember, Journal, Rollout


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def write_json(path: Path, data: Any) -> None:
    """Atomically (a temp file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """The dict in path; None when it is missing or not a JSON object."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def selector(track: str, env: str) -> str:
    return f'track="{track}",env="{env}"'


def write_file_sd(path: Path, env: str, members: list[tuple[str, str, int | None]]) -> None:
    """Prometheus file_sd targets: (track, host:port, revision) each, labelled track/env/revision."""
    write_json(
        path,
        [
            {
                "targets": [address],
                "labels": {"track": track, "env": env, **({"revision": str(rev)} if rev is not None else {})},
            }
            for track, address, rev in members
        ],
    )


class HAProxyCanary:
    """What the local and container targets' canaries share: the weights on HAProxy's runtime API, and the
    way promote and abort end (each target's `_finish` keeps one server of a revision on the env's port)."""

    if TYPE_CHECKING:  # what each target's mixin provides

        @property
        def haproxy_dir(self) -> Path: ...
        def canary_file(self, env: str) -> Path: ...
        def _finish(self, info: dict, keep: str, journal: Journal) -> Rollout: ...
        def _answers(self, env: str, name: str | None) -> bool: ...
        def _member(self, info: dict, track: str) -> CanaryMember: ...

        from ..settings import Settings

        settings: Settings

    def _canary_of(self, info: dict) -> Canary:
        """The Canary a target's canary file describes (each target says what its members are: `_member`)."""
        from ..targets import Canary

        return Canary(
            env=info["env"],
            url=f"http://{info['host']}:{info['port']}",
            stable=self._member(info, "stable"),
            canary=self._member(info, "canary"),
            weight=int(info.get("weight", 0)),
        )

    def _route(self, info: dict, stable: str, exe: str, user: str | None = None) -> None:
        """HAProxy on the env's port (weights 100/0) until it answers there with the stable copy `stable` (name)."""
        env, host, port = info["env"], info["host"], info["port"]
        split = haproxy.Split(
            env, host, port, f"{host}:{info['stable']['port']}", f"{host}:{info['canary']['port']}", 0
        )
        info["haproxy_pid"] = haproxy.start(split, self.haproxy_dir, binary=exe, user=user)
        self._save(info)
        deadline = time.monotonic() + self.settings.deploy.ready_timeout_s
        while not self._answers(env, stable):  # HAProxy took the port, and sends to the copy
            if time.monotonic() > deadline:
                raise StageFailed(
                    f"HAProxy on {host}:{port} did not answer with the stable copy within "
                    f"{self.settings.deploy.ready_timeout_s:g} s (deploy.ready_timeout_s)"
                )
            time.sleep(0.1)

    def file_sd_path(self, env: str) -> Path:
        return self.settings.workdir.resolve() / "prometheus" / f"targets-{env}.json"

    def _write_file_sd(self, env: str, members: list[tuple[str, str, int | None]]) -> None:
        write_file_sd(self.file_sd_path(env), env, members)

    def _load(self, env: str) -> dict | None:
        return read_json(self.canary_file(env))

    def _save(self, info: dict) -> None:
        write_json(self.canary_file(info["env"]), info)

    def _weigh(self, info: dict, weight: int) -> None:
        haproxy.set_weight(haproxy.paths(self.haproxy_dir, info["env"])[1], weight)
        info["weight"] = weight
        self._save(info)

    def canary_set_weight(self, canary: Canary, weight: int, journal: Journal) -> Canary:
        info = self._load(canary.env)
        if info is None or not haproxy.running_pid(self.haproxy_dir, canary.env):
            raise StageFailed(f"the canary of {canary.env} is not running (no HAProxy)")
        journal(f"set-weight-{weight}")
        self._weigh(info, weight)
        return replace(canary, weight=weight)

    def canary_promote(self, canary: Canary, journal: Journal) -> Rollout:
        info = self._load(canary.env)
        if info is None:
            raise StageFailed(f"no canary of {canary.env} to promote ({self.canary_file(canary.env)} is gone)")
        if haproxy.running_pid(self.haproxy_dir, canary.env):
            journal("set-weight-100")
            self._weigh(info, 100)
        return self._finish(info, "canary", journal)

    def canary_abort(self, canary: Canary, journal: Journal) -> Rollout | None:
        info = self._load(canary.env)
        if info is None:
            return None
        if haproxy.running_pid(self.haproxy_dir, canary.env):
            try:
                self._weigh(info, 0)
            except StageFailed as exc:
                progress(f"warning: could not set the canary's weight to 0 ({exc.message}); removing it anyway")
        rollout = self._finish(info, "stable", journal)
        return None if info.get("final", {}).get("reused") else rollout
