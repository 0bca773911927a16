"""Canary releases on the local target: HAProxy on the environment's port in front of two servers.

canary_start: a copy of the stable revision and the new revision each start on a port of their own
(found free on deploy.<env>.host), HAProxy starts on the env's port with weights 100/0 and joins
the reuseport group, where the servers' steering program hands it every new connection; then the
process that served the port drains and exits. Users call the same URL throughout.
canary_set_weight: HAProxy's runtime API (no reload). canary_promote / canary_abort end in the
plain shape of the local target again: one server of the kept revision started on the env's port
with the handover (exactly as a rolling update starts one), then HAProxy soft-stops and the two
servers drain. Both are resumable: run again after a crash, they finish what is left.

What runs is kept in `<workdir>/run/canary-<env>.json` (the target's own file; state is the stage's),
and the Prometheus file_sd targets in `<workdir>/prometheus/targets-<env>.json`, labelled
`track="stable"|"canary"` and `env="<env>"` (docs/canary.md shows the scrape config).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..canary import haproxy
from ..canary.onehost import HAProxyCanary, selector
from ..canary.onehost import free_port as _free_port
from ..errors import StageFailed
from ..state import DeploymentRecord
from ..ui import progress
from . import Canary, CanaryMember, Journal, Release, Rollout


class LocalCanary(HAProxyCanary):
    """The CanCanary methods of LocalTarget (mixed into it; uses its helpers and settings)."""

    if TYPE_CHECKING:  # what the mixin uses of LocalTarget (its attributes and helpers)
        from ..settings import Settings

        settings: Settings
        run_dir: Path
        log_dir: Path

        def is_running(self, current: DeploymentRecord) -> bool: ...
        def stop(self, current: DeploymentRecord) -> bool: ...
        @staticmethod
        def _answering(url: str) -> str | None: ...
        def _wait_loaded(self, proc: subprocess.Popen, ready_file: Path, log_path: Path) -> None: ...
        def _wait_serving(
            self, proc: subprocess.Popen, ready_file: Path, log_path: Path, url: str, instance: str
        ) -> None: ...

    # --- files ---
    @property
    def haproxy_dir(self) -> Path:
        return self.run_dir

    def canary_file(self, env: str) -> Path:
        return self.run_dir / f"canary-{env}.json"

    # --- servers ---
    def _spawn(self, env: str, bundle: str, host: str, port: int, revision: int, name: str, handover: bool) -> dict:
        """Start one server (supervised as deploy.restart says); its identity and files."""
        from .local import _CHILDREN, server_command, server_process_environ, supervised

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ready_file = self.run_dir / f"{env}-{name}.ready"
        ready_file.unlink(missing_ok=True)
        log_path = self.log_dir / f"{env}-{name}.log"
        instance = uuid.uuid4().hex[:16]
        argv = server_command(bundle, host, port, ready_file, instance, revision, handover)
        if self.settings.deploy.restart == "on-failure":
            status = self.run_dir / f"{env}-{name}.supervisor.json"
            argv = supervised(argv, status)
        environ = server_process_environ(bundle)  # behind HAProxy: the full drain, no handover of the port
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=bundle,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        return {
            "instance": instance,
            "pid": proc.pid,
            "port": port,
            "host": host,
            "revision": revision,
            "bundle": bundle,
            "ready_file": str(ready_file),
            "log_path": str(log_path),
        }

    def _wait_up(self, server: dict, handover: bool) -> None:
        """Until the server answers on its own address with its own identity (after the handover if asked)."""
        from .local import _CHILDREN, terminate

        proc = _CHILDREN.get(server["pid"])
        ready, log = Path(server["ready_file"]), Path(server["log_path"])
        url = f"http://{server['host']}:{server['port']}"
        try:
            if proc is None:
                raise StageFailed(f"server {server['instance']} is not a child of this process")
            if handover:
                self._wait_loaded(proc, ready, log)
                os.kill(proc.pid, signal.SIGUSR1)
            self._wait_serving(proc, ready, log, url, server["instance"])
        except BaseException:
            terminate(server["pid"], 5)
            raise

    def _stop_servers(self, info: dict, *roles: str) -> None:
        """SIGTERM to each (they drain side by side), then SIGKILL to any still there after deploy.stop_timeout_s."""
        from .local import _alive, _cmdline, _flag, _wait_exit

        pids = []
        for role in roles:
            server = info.get(role)
            if (
                server
                and server.get("pid")
                and _alive(server["pid"])
                and _flag(_cmdline(server["pid"]), "--instance") == server["instance"]
            ):
                try:
                    os.kill(server["pid"], signal.SIGTERM)
                    pids.append(server["pid"])
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.settings.deploy.stop_timeout_s
        for pid in pids:
            if not _wait_exit(pid, max(0.1, deadline - time.monotonic())):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _wait_exit(pid, 5)

    def _answers(self, env: str, instance: str | None) -> bool:
        env_cfg = getattr(self.settings.deploy, env)
        return bool(instance) and self._answering(f"http://{env_cfg.host}:{env_cfg.port}") == instance

    # --- the protocol ---
    def _member(self, info: dict, track: str) -> CanaryMember:
        server = info[track]
        url = f"http://{server['host']}:{server['port']}"
        return CanaryMember(
            track=track,
            url=url,
            metrics_url=f"{url}/metrics",
            selector=selector(track, info["env"]),
            revision=server["revision"],
            handle=server["instance"],
        )

    def canary_start(self, env: str, release: Release, current: DeploymentRecord, journal: Journal) -> Canary:
        exe = haproxy.haproxy_binary(self.settings.rollout.haproxy)  # one line naming the package when missing
        if not self.is_running(current):
            raise StageFailed(
                f"revision {current.revision} of {env} is not running; a canary needs a serving stable revision",
                hint="run `mlops rolling-update` with rollout.strategy rolling",
            )
        env_cfg = getattr(self.settings.deploy, env)
        host, port = env_cfg.host, env_cfg.port
        revision = current.revision + 1
        info: dict[str, Any] = {
            "env": env,
            "host": host,
            "port": port,
            "weight": 0,
            "haproxy_pid": None,
            "original": {"pid": current.pid, "instance": current.handle},
            "stable_bundle": current.bundle_path,
            "canary_bundle": str(release.bundle),
            "stable_revision": current.revision,
            "canary_revision": revision,
        }
        stable = self._spawn(
            env,
            current.bundle_path,
            host,
            _free_port(host),
            current.revision,
            f"{current.revision}-stable",
            handover=False,
        )
        info["stable"] = stable
        self._save(info)
        journal("canary-starting", revision=revision, port=port)
        try:
            canary = self._spawn(
                env, str(release.bundle), host, _free_port(host), revision, f"{revision}-canary", handover=False
            )
            info["canary"] = canary
            self._save(info)
            journal("canary-starting", revision=revision, instance=canary["instance"], pid=canary["pid"], port=port)
            progress(
                f"starting the stable copy (revision {current.revision}) on {host}:{stable['port']} and the "
                f"canary (revision {revision}) on {host}:{canary['port']}"
            )
            self._wait_up(stable, handover=False)
            self._wait_up(canary, handover=False)
            journal("canary-routing")
            self._route(info, stable["instance"], exe)
        except BaseException:
            self._undo_start(info)
            raise
        journal("canary-draining")
        info["original"]["draining"] = True  # from now on it may be gone or going: never taken back
        self._save(info)
        progress(f"HAProxy serves {host}:{port}; draining revision {current.revision} (pid {current.pid})")
        self.stop(current)
        self._write_file_sd(
            env,
            [
                ("stable", f"{host}:{stable['port']}", current.revision),
                ("canary", f"{host}:{canary['port']}", revision),
            ],
        )
        return self._canary_of(info)

    def _undo_start(self, info: dict) -> None:
        """A start that failed part-way: HAProxy and both new servers go; the original still serves."""
        if info.get("haproxy_pid"):
            haproxy.stop(info["haproxy_pid"], self.settings.deploy.stop_timeout_s)
        self._stop_servers(info, "stable", "canary")
        self.canary_file(info["env"]).unlink(missing_ok=True)

    def _finish(self, info: dict, keep: str, journal: Journal) -> Rollout:
        """One server of the kept revision on the env's port (resuming one that already answers), then the rest go."""
        env = info["env"]
        bundle, revision = info[f"{keep}_bundle"], info[f"{keep}_revision"]
        other = info["stable_revision"] if keep == "canary" else info.get("canary_revision")
        final = info.get("final")
        from .local import _alive

        if (
            final is None
            or final.get("keep") != keep
            or not (_alive(final["pid"]) and self._answers(env, final["instance"]))
        ):
            original = info["original"]
            if keep == "stable" and original.get("pid") and not original.get("draining") and _alive(original["pid"]):
                # killed before the original drained: it still listens and takes the port back once HAProxy goes
                final = {"keep": keep, "pid": original["pid"], "instance": original["instance"], "reused": True}
                info["final"] = final
                self._save(info)
            else:
                server = self._spawn(env, bundle, info["host"], info["port"], revision, str(revision), handover=True)
                final = {"keep": keep, **server}
                info["final"] = final
                self._save(info)
                journal(
                    f"{'promote' if keep == 'canary' else 'abort'}-handover",
                    instance=server["instance"],
                    pid=server["pid"],
                )
                progress(f"starting revision {revision} on {info['host']}:{info['port']} to take over from HAProxy")
                self._wait_up(server, handover=True)
        journal(f"{'promote' if keep == 'canary' else 'abort'}-cleanup")
        pid = haproxy.running_pid(self.run_dir, env)
        if pid:
            haproxy.stop(pid, self.settings.deploy.stop_timeout_s)
        self._stop_servers(info, "stable", "canary")
        self.canary_file(env).unlink(missing_ok=True)
        self._write_file_sd(env, [("stable", f"{info['host']}:{info['port']}", revision)])
        if final.get("reused"):
            return Rollout(
                url=f"http://{info['host']}:{info['port']}",
                revision=revision,
                previous_revision=other,
                pid=final["pid"],
                handle=final["instance"],
            )
        return Rollout(
            url=f"http://{info['host']}:{info['port']}",
            revision=revision,
            previous_revision=other,
            pid=final["pid"],
            log_path=final["log_path"],
            handle=final["instance"],
        )

    def canary_observe(self, env: str, current: DeploymentRecord | None) -> Canary | None:
        info = self._load(env)
        if info is None or "stable" not in info:
            return None
        if "canary" not in info:
            info["canary"] = {"instance": None, "host": info["host"], "port": 0, "revision": info["canary_revision"]}
        return self._canary_of(info)

    def final_answers(self, env: str) -> bool:
        """Whether the server a promotion started on the env's port answers there (reconciliation)."""
        info = self._load(env)
        final = (info or {}).get("final") or {}
        return bool(final) and final.get("keep") == "canary" and self._answers(env, final.get("instance"))

    def stop_split(self, env: str) -> bool:
        """`mlops stop`: HAProxy of env's canary goes too; True when it ran."""
        pid = haproxy.running_pid(self.run_dir, env)
        if pid:
            haproxy.stop(pid, self.settings.deploy.stop_timeout_s)
        self.canary_file(env).unlink(missing_ok=True)
        return bool(pid)
