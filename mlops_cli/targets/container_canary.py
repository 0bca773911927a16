"""Canary releases on the container target: HAProxy on the host, on the environment's port, in front
of two containers.

canary_start: a copy of the stable image and the new image (both pinned by digest) each run as a
container of their own on a free host port (host networking, labelled `io.mlops.track=stable|canary`
beside the usual env/workdir/revision labels); HAProxy (mlops_cli/canary/haproxy.py) starts on the
host on the env's port with weights 100/0 and joins the port's reuseport group, where the servers'
steering program hands it every new connection; then the container that served the port drains and
is removed. HAProxy runs as deploy.run_as when that is set (a socket joins a reuseport group only
under the same user). canary_set_weight: HAProxy's runtime API. canary_promote / canary_abort end in
the container target's plain shape: one container of the kept image on the env's port (started as a
rolling update starts one), then HAProxy soft-stops and the two containers behind it drain and go.
Both are resumable: run again after a crash, they finish what is left.

What runs is kept in `<workdir>/run/container-canary-<env>.json`; HAProxy's `haproxy-<env>.{cfg,sock,pid,log}`
are in `<workdir>/run/split/`, or, when HAProxy runs as deploy.run_as, in `<tmp>/mlops-split-<hash of the
workdir>/` owned by that user (mode 700; the workdir's parents may be closed to it). Prometheus file_sd targets in
`<workdir>/prometheus/targets-<env>.json` as on the local target.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..canary import haproxy
from ..canary.onehost import HAProxyCanary, free_port, selector
from ..errors import StageFailed
from ..state import DeploymentRecord
from ..ui import progress
from . import Canary, CanaryMember, Journal, Release, Rollout


class ContainerCanary(HAProxyCanary):
    """The CanCanary methods of ContainerTarget (mixed into it; uses its podman helpers)."""

    if TYPE_CHECKING:  # what the mixin uses of ContainerTarget
        import subprocess

        from ..settings import Settings

        settings: Settings

        def _podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess: ...
        def _running(self, name: str) -> bool | None: ...
        def _remove(self, name: str) -> None: ...
        def _run(
            self, name: str, env: str, revision: int, image: str, host: str, port: int, labels: tuple[str, ...] = ()
        ) -> None: ...
        def _wait_ready(self, name: str, url: str) -> None: ...
        def is_running(self, current: DeploymentRecord) -> bool: ...
        @staticmethod
        def _answering(url: str) -> str | None: ...

    # --- files ---
    @property
    def haproxy_dir(self) -> Path:
        """Where HAProxy's files are: `<workdir>/run/split`, or, when HAProxy runs as deploy.run_as, a directory
        of that user's in the temp dir (named after the workdir), which the workdir's parents may not let it reach."""
        if self._haproxy_user() is None:
            return self.settings.workdir.resolve() / "run" / "split"
        digest = hashlib.sha256(str(self.settings.workdir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"mlops-split-{digest}"

    def _haproxy_user(self) -> tuple[int, int] | None:
        user = self.settings.deploy.run_as
        if not user or os.geteuid() != 0:
            return None
        uid, _, gid = user.partition(":")
        return int(uid), int(gid or uid)

    def _haproxy_dir_ready(self) -> Path:
        """The directory, owned by deploy.run_as when HAProxy runs as that user (it creates its socket there)."""
        directory = self.haproxy_dir
        user = self._haproxy_user()
        if user is None:
            directory.mkdir(parents=True, exist_ok=True)
            return directory
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, user[0]):
            raise StageFailed(f"{directory} is not a directory of root or of deploy.run_as {user[0]}; remove it")
        os.chown(directory, *user)
        os.chmod(directory, 0o700)
        return directory

    def _drop_haproxy_dir(self, env: str) -> None:
        """Once env's HAProxy is gone: the temp directory of HAProxy run as deploy.run_as goes too, unless another
        env's HAProxy still runs from it (nothing of the workdir's is left in /tmp)."""
        if self._haproxy_user() is None:
            return
        haproxy.paths(self.haproxy_dir, env)[2].unlink(missing_ok=True)
        others = [p.name[len("haproxy-") : -len(".pid")] for p in self.haproxy_dir.glob("haproxy-*.pid")]
        if not any(haproxy.running_pid(self.haproxy_dir, other) for other in others):
            shutil.rmtree(self.haproxy_dir, ignore_errors=True)

    def canary_file(self, env: str) -> Path:
        return self.settings.workdir.resolve() / "run" / f"container-canary-{env}.json"

    def _answers(self, env: str, name: str | None) -> bool:
        env_cfg = getattr(self.settings.deploy, env)
        return bool(name) and self._answering(f"http://{env_cfg.host}:{env_cfg.port}") == name

    def _remove_all(self, *names: str) -> None:
        """Stop them side by side (each drains within deploy.stop_timeout_s), then remove them."""
        names = tuple(n for n in names if n)
        if names:
            self._podman(
                "stop",
                "--time",
                str(int(self.settings.deploy.stop_timeout_s)),
                *names,
                timeout=self.settings.deploy.stop_timeout_s + 30,
            )
            self._podman("rm", "--force", *names)

    # --- the protocol ---
    def _member(self, info: dict, track: str) -> CanaryMember:
        box = info[track]
        url = f"http://{info['host']}:{box['port']}"
        return CanaryMember(
            track=track,
            url=url,
            metrics_url=f"{url}/metrics",
            selector=selector(track, info["env"]),
            revision=box["revision"],
            image=box["image"],
            handle=box["name"],
        )

    def _start_member(self, info: dict, track: str, image: str, revision: int) -> dict:
        env, host = info["env"], info["host"]
        box: dict[str, Any] = {
            "name": f"mlops-{env}-{revision}-{track}-{uuid.uuid4().hex[:8]}",
            "port": free_port(host),
            "revision": revision,
            "image": image,
        }
        info[track] = box
        self._save(info)  # before it runs: an interrupted start knows what to remove
        self._run(box["name"], env, revision, image, host, box["port"], labels=(f"io.mlops.track={track}",))
        return box

    def canary_start(self, env: str, release: Release, current: DeploymentRecord, journal: Journal) -> Canary:
        exe = haproxy.haproxy_binary(self.settings.rollout.haproxy)  # one line naming the package when missing
        if not release.image or "@sha256:" not in release.image:
            raise StageFailed("the container target runs images pinned by digest only", hint="run `mlops build-image`")
        if not current.image or "@sha256:" not in current.image or not current.handle:
            raise StageFailed(
                f"revision {current.revision} of {env} has no image pinned by digest in state; a canary "
                f"needs one to run a copy of it",
                hint="run `mlops rolling-update` with rollout.strategy rolling",
            )
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
            "original": {"name": current.handle},
            "stable_image": current.image,
            "canary_image": release.image,
            "stable_revision": current.revision,
            "canary_revision": revision,
        }
        self._haproxy_dir_ready()
        journal("canary-starting", revision=revision, port=port)
        try:
            stable = self._start_member(info, "stable", current.image, current.revision)
            canary = self._start_member(info, "canary", release.image, revision)
            journal("canary-starting", revision=revision, instance=canary["name"], port=port)
            progress(
                f"starting the stable copy (revision {current.revision}) as {stable['name']} on "
                f"{host}:{stable['port']} and the canary {release.image} as {canary['name']} on "
                f"{host}:{canary['port']}"
            )
            self._wait_ready(stable["name"], f"http://{host}:{stable['port']}")
            self._wait_ready(canary["name"], f"http://{host}:{canary['port']}")
            journal("canary-routing")
            self._route(info, stable["name"], exe, user=self.settings.deploy.run_as)
        except BaseException:
            self._undo_start(info)
            raise
        journal("canary-draining")
        info["original"]["draining"] = True  # from now on it may be gone or going: never taken back
        self._save(info)
        progress(f"HAProxy serves {host}:{port}; draining {current.handle} (revision {current.revision})")
        self._remove(current.handle)
        self._write_file_sd(
            env,
            [
                ("stable", f"{host}:{stable['port']}", current.revision),
                ("canary", f"{host}:{canary['port']}", revision),
            ],
        )
        return self._canary_of(info)

    def _undo_start(self, info: dict) -> None:
        """A start that failed part-way: HAProxy and both new containers go; the original still serves."""
        pid = haproxy.running_pid(self.haproxy_dir, info["env"])
        if pid:
            haproxy.stop(pid, self.settings.deploy.stop_timeout_s)
        self._remove_all(*(info[track]["name"] for track in ("stable", "canary") if track in info))
        self.canary_file(info["env"]).unlink(missing_ok=True)

    def _finish(self, info: dict, keep: str, journal: Journal) -> Rollout:
        """One container of the kept image on the env's port (resuming one that already answers), then the rest go."""
        env, host, port = info["env"], info["host"], info["port"]
        image, revision = info[f"{keep}_image"], info[f"{keep}_revision"]
        other = info["stable_revision"] if keep == "canary" else info.get("canary_revision")
        word = "promote" if keep == "canary" else "abort"
        final = info.get("final")
        if final is None or final.get("keep") != keep or not self._answers(env, final["name"]):
            original = info["original"]
            if keep == "stable" and not original.get("draining") and self._running(original["name"]):
                # stopped before the original drained: it still listens and takes the port back once HAProxy goes
                final = {"keep": keep, "name": original["name"], "reused": True}
                info["final"] = final
                self._save(info)
            else:
                if final is not None and final.get("name"):
                    self._podman("rm", "--force", final["name"])  # a start that did not finish
                final = {"keep": keep, "name": f"mlops-{env}-{revision}-{uuid.uuid4().hex[:8]}"}
                info["final"] = final
                self._save(info)
                journal(f"{word}-handover", instance=final["name"])
                progress(f"starting {image} as {final['name']} on {host}:{port} to take over from HAProxy")
                self._run(final["name"], env, revision, image, host, port)
                try:
                    self._wait_ready(final["name"], f"http://{host}:{port}")
                except BaseException:
                    self._podman("rm", "--force", final["name"])
                    raise
        journal(f"{word}-cleanup")
        pid = haproxy.running_pid(self.haproxy_dir, env)
        if pid:
            haproxy.stop(pid, self.settings.deploy.stop_timeout_s)
        self._remove_all(*(info[track]["name"] for track in ("stable", "canary") if track in info))
        self.canary_file(env).unlink(missing_ok=True)
        self._drop_haproxy_dir(env)
        self._write_file_sd(env, [("stable", f"{host}:{port}", revision)])
        return Rollout(
            url=f"http://{host}:{port}", revision=revision, previous_revision=other, handle=final["name"], image=image
        )

    def canary_observe(self, env: str, current: DeploymentRecord | None) -> Canary | None:
        info = self._load(env)
        if info is None or "stable" not in info:
            return None
        if "canary" not in info:
            info["canary"] = {
                "name": None,
                "port": 0,
                "revision": info["canary_revision"],
                "image": info["canary_image"],
            }
        return self._canary_of(info)

    def final_answers(self, env: str) -> bool:
        """Whether the container a promotion started on the env's port answers there (reconciliation)."""
        final = (self._load(env) or {}).get("final") or {}
        return bool(final) and final.get("keep") == "canary" and self._answers(env, final.get("name"))

    def stop_split(self, env: str) -> bool:
        """`mlops stop`: HAProxy of env's canary goes too (its containers go by their labels); True when it ran."""
        pid = haproxy.running_pid(self.haproxy_dir, env)
        if pid:
            haproxy.stop(pid, self.settings.deploy.stop_timeout_s)
        self.canary_file(env).unlink(missing_ok=True)
        self._drop_haproxy_dir(env)
        return bool(pid)
