"""Deploy targets, one module each behind the DeployTarget protocol, chosen by `deploy.target`."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..backends import load
from ..errors import StageFailed, UsageError

if TYPE_CHECKING:
    from ..settings import Settings
    from ..state import DeploymentRecord, State

TARGETS = {
    "local": "mlops_cli.targets.local:LocalTarget",
    "container": "mlops_cli.targets.container:ContainerTarget",
    "kubernetes": "mlops_cli.targets.kubernetes:KubernetesTarget",
}


@dataclass(frozen=True)
class Release:
    """What to run: the validated bundle and, once built, its image pinned by digest."""

    bundle: Path
    image: str | None = None  # repository@sha256:...
    # what the stage read from state (the kubernetes target renders its manifests from it); a target
    # reads it and never saves it: the stage alone records outcomes
    state: State | None = None


@dataclass(frozen=True)
class Rollout:
    """Where a new revision runs, as the target reports it."""

    url: str
    revision: int
    previous_revision: int | None
    pid: int | None = None
    log_path: str | None = None
    handle: str | None = None  # the target's own name for it (a container's name, namespace/deployment)
    image: str | None = None  # the image that serves, when the target knows it


# journal(step, **fields): a target reports each step of a rollout (and the new server's identity)
# before taking it; the stage records it in state's intent journal. Targets never touch state.
Journal = Callable[..., None]


def no_journal(step: str, **fields: Any) -> None:
    """The journal of a caller that keeps none."""


def poll_delays(first: float = 0.005, cap: float = 0.1):
    """Waits between polls of a readiness check: from a few ms, doubling up to cap (a server ready in
    300 ms is seen within ms of it, one that takes seconds costs a poll per cap)."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def ready_identity(url: str, timeout: float = 2) -> str | None:
    """Who answers `url`'s /health/ready: the `instance` token (or "pid:N") of a server of ours that is
    ready; None when nothing answers, or not 200, or not a server's answer.

    A plain http.client request: an httpx client builds a TLS context first (~20 ms per call)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", "/health/ready")
        answer = conn.getresponse()
        body = answer.read()
        info = json.loads(body) if answer.status == 200 else {}
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    if not isinstance(info, dict):
        return None
    return info.get("instance") or (f"pid:{info['pid']}" if info.get("pid") else None)


def wait_for_exit(pid: int, timeout: float) -> None:
    """Return once process `pid` has ended or after `timeout` s; at once where that cannot be watched.

    A pidfd (Linux 5.3+) becomes readable when the process ends, child or not: no polling delay. The
    caller confirms (and reaps) by its own check."""
    import os
    import select

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here, or the process is gone already
        return
    try:
        watch = select.poll()
        watch.register(fd, select.POLLIN)
        watch.poll(max(timeout, 0) * 1000)
    finally:
        os.close(fd)


IDENTITY_FLAGS = ("--instance", "--revision", "--await-handover")


def predates_identity(log_lines: list[str]) -> str | None:
    """One line when a server's log shows it refused the identity flags: its bundle is older than them."""
    for line in log_lines:
        if "unrecognized arguments" in line and any(flag in line for flag in IDENTITY_FLAGS):
            return (
                "the bundle's server is older than the identity flags this mlops starts it with "
                f"({', '.join(IDENTITY_FLAGS)}): {line.strip()[:200]}"
            )
    return None


PAUSE_ENV = "MLOPS_TEST_PAUSE_AT"  # test hook: pause a rollout at a named step (see pause_at)


def pause_at(step: str) -> None:
    """Test hook: with MLOPS_TEST_PAUSE_AT=<step>, pause (at most 60 s) once the step is journaled.

    It says "paused before step <step>" on stderr and sleeps before taking the step, so a test can
    kill or abort the CLI at exactly that step of a rollout. Unset in production.
    """
    import os
    import time

    if os.environ.get(PAUSE_ENV) == step:
        from ..ui import progress

        progress(f"paused before step {step} ({PAUSE_ENV})")
        time.sleep(60)


@dataclass(frozen=True)
class Server:
    """One server of ours that a target finds running in an environment (reconciliation)."""

    ident: str  # its identity: the local --instance token, the container's name
    pid: int | None = None
    revision: int | None = None


@dataclass(frozen=True)
class Observed:
    """What really runs in an environment: our servers, and which of them answers on its port."""

    servers: tuple[Server, ...]
    serving: str | None  # ident of the server whose /health/ready answered on the port


class CanReconcile(Protocol):
    """A target that can say what of ours runs (local, container), so a stage can compare it with state."""

    def observe(self, env: str) -> Observed:
        """Our servers in env and which one takes new connections."""

    def stop_server(self, server: Server) -> None:
        """Stop one server (drain, then kill after deploy.stop_timeout_s)."""

    def ident_of(self, record: DeploymentRecord) -> str | None:
        """The identity of the server a deployment record names."""


class RolledBack(StageFailed):
    """The new revision failed and the target went back to the previous one, which serves again."""

    def __init__(self, message: str, *, restored: Rollout, failed_revision: int | None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.restored = restored
        self.failed_revision = failed_revision


class RollbackFailed(StageFailed):
    """The new revision failed and going back to the previous one failed too: nothing serves for sure."""


class DeployTarget(Protocol):
    needs_image: bool

    def deploy(self, env: str, release: Release, current: DeploymentRecord | None) -> Rollout:
        """Run the release in env, replacing `current` with no failed request; wait until ready.

        On failure the current revision keeps serving and a StageFailed says why.
        """

    def stop(self, current: DeploymentRecord) -> bool:
        """Stop what runs in the environment; False when nothing was running."""

    def is_running(self, current: DeploymentRecord) -> bool:
        """Whether the deployment still serves."""


class CanRollBack(Protocol):
    """A target that keeps earlier revisions (kubernetes) can go back to one on request."""

    def rollback(self, env: str, current: DeploymentRecord) -> Rollout:
        """Run the revision before the current one again and wait until it serves."""


@dataclass(frozen=True)
class CanaryMember:
    """One revision of a canary release, as the target runs it."""

    track: str  # "stable" | "canary"
    url: str  # that revision's own server (direct, bypassing the split)
    metrics_url: str  # its /metrics (the no-Prometheus fallback scrapes it)
    selector: str  # PromQL label matchers for its series, e.g. 'track="canary",namespace="mlops-prod"'
    revision: int | None = None
    image: str | None = None  # repo@sha256:... when the target runs images
    handle: str | None = None  # the target's own name (process ident, container, Deployment)


@dataclass(frozen=True)
class Canary:
    """A canary release in progress: the shared entry point, both revisions, the canary's share."""

    env: str
    url: str  # the shared entry point users call (HAProxy / Route / Ingress)
    stable: CanaryMember
    canary: CanaryMember
    weight: int  # percent of traffic to the canary, 0..100


class CanCanary(Protocol):
    """A target that can run a new revision beside the current one and shift traffic by weight."""

    def canary_start(self, env: str, release: Release, current: DeploymentRecord, journal: Journal) -> Canary:
        """Start the release beside the current revision at weight 0 and wait until it is ready."""

    def canary_set_weight(self, canary: Canary, weight: int, journal: Journal) -> Canary:
        """Send `weight` percent of new requests to the canary; no request fails while changing."""

    def canary_promote(self, canary: Canary, journal: Journal) -> Rollout:
        """100 % to the new revision, the old one removed; the Rollout is the new current deployment."""

    def canary_abort(self, canary: Canary, journal: Journal) -> Rollout | None:
        """Weight 0, the canary removed; stable serves as before. A target that had to restart the stable
        revision to put it back returns its new identity as a Rollout (None: the deployment record holds)."""

    def canary_observe(self, env: str, current: DeploymentRecord) -> Canary | None:
        """The canary that runs in env now, if any (for reconciliation after a crash)."""


def get_target(name: str, settings: Settings) -> DeployTarget:
    return load("deploy target", name, TARGETS)(settings)


def port_free(host: str, port: int) -> bool:
    """Whether a listener could bind host:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise UsageError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return True


def check_port(env: str, host: str, port: int) -> None:
    if not port_free(host, port):
        key = f"deploy.{env}.port"
        raise UsageError(
            f"port {port} on {host} is already in use by another program",
            hint=f"stop it or choose another port with {key} / MLOPS_{key.upper().replace('.', '__')}",
        )
