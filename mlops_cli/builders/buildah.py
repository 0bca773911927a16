"""The buildah builder: daemonless, for agents with no Docker socket (OpenShift Jenkins agents).

Credentials go to buildah in a temporary auth file (mode 0600), never on the command line, and to a
registry that is not a loopback address only over verified TLS (whatever registries.conf says).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ConfigError, StageFailed
from ..proc import run
from ..settings import Settings, is_loopback, registry_host
from . import BuildRequest, registry_failure, with_retries


def _quoted(text: str) -> str:
    """A Dockerfile double-quoted word that reads back as text: backslash, quote and dollar escaped (no expansion)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def labelled_dockerfile(request: BuildRequest) -> Path:
    """The context's Dockerfile with the labels as one last LABEL instruction, beside it in the context.

    buildah makes each `--label` flag a step of its own, committed as its own image with --layers
    (seven labels: 1.5-2.4 s of a model-only rebuild here); one LABEL instruction is one step. The
    bundle's Dockerfile is not touched: the context is build-image's copy of the bundle."""
    dockerfile = request.context / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8")
    pairs = " ".join(f"{_quoted(k)}={_quoted(v)}" for k, v in sorted(request.labels.items()))
    labelled = request.context / ".Dockerfile.labelled"
    labelled.write_text(
        text + ("" if text.endswith("\n") else "\n") + (f"LABEL {pairs}\n" if pairs else ""), encoding="utf-8"
    )
    return labelled


class BuildahBuilder:
    def __init__(self, settings: Settings):
        self.cfg = settings.build
        binary = shutil.which("buildah")
        if binary is None:
            raise ConfigError(
                "buildah is not installed or not on PATH",
                hint="install it (Debian: apt-get install buildah) or set build.builder: docker",
            )
        self.binary = binary

    def _argv(self, *args: str) -> list[str]:
        argv = [self.binary]
        if self.cfg.storage_driver:
            argv += ["--storage-driver", self.cfg.storage_driver]
        return argv + list(args)

    def close(self) -> None:
        """Nothing to release: every call is its own process."""

    def build(self, request: BuildRequest) -> None:
        args = ["bud", "--layers", "-f", str(labelled_dockerfile(request)), "-t", request.tag]
        if self.cfg.isolation:
            args += ["--isolation", self.cfg.isolation]
        done = run(self._argv(*args, str(request.context)), timeout=self.cfg.timeout_s, stream=True)
        if done.returncode != 0:
            raise StageFailed(
                f"buildah bud failed (exit code {done.returncode}); last lines of its log:\n{done.tail(15)}"
            )

    def push(self, tag: str) -> str:
        registry = self.cfg.registry or tag.split("/")[0]
        return with_retries(
            lambda: self._push_once(tag, registry),
            retries=self.cfg.retries,
            backoff_s=self.cfg.retry_backoff_s,
            what=f"push to {registry}",
        )

    def _push_once(self, tag: str, registry: str) -> str:
        with tempfile.TemporaryDirectory(prefix="mlops-push-") as tmp:
            digest_file = Path(tmp) / "digest"
            args = ["push", "--retry", "0", "--digestfile", str(digest_file)]
            if self.cfg.insecure:
                args.append("--tls-verify=false")
            password = self.cfg.registry_password()
            if self.cfg.username and password is not None:
                if not self.cfg.insecure and not is_loopback(registry_host(registry)):
                    # explicit: overrides an `insecure = true` for this registry in registries.conf, with which
                    # buildah would fall back to plain http and send the credentials in clear text
                    args.append("--tls-verify=true")
                auth_file = Path(tmp) / "auth.json"
                token = base64.b64encode(f"{self.cfg.username}:{password}".encode()).decode()
                fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump({"auths": {registry.split("/")[0]: {"auth": token}}}, fh)
                args += ["--authfile", str(auth_file)]
            done = run(self._argv(*args, tag, f"docker://{tag}"), timeout=self.cfg.timeout_s, stream=True)
            if done.returncode != 0:
                raise registry_failure(registry, done.output)
            return digest_file.read_text().strip()
