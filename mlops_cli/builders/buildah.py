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
from ..ui import progress
from . import BuildRequest, registry_failure, with_retries
from . import runtime_image as rt


def _quoted(text: str) -> str:
    """A Dockerfile double-quoted word that reads back as text: backslash, quote and dollar escaped (no expansion)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def labelled_dockerfile(request: BuildRequest, text: str | None = None) -> Path:
    """The context's Dockerfile (or `text`) with the labels as one last LABEL instruction, beside it in the context.

    buildah makes each `--label` flag a step of its own, committed as its own image with --layers
    (seven labels: 1.5-2.4 s of a model-only rebuild here); one LABEL instruction is one step. The
    bundle's Dockerfile is not touched: the context is build-image's copy of the bundle."""
    if text is None:
        text = (request.context / "Dockerfile").read_text(encoding="utf-8")
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

    def _bud(self, *args: str, context: Path) -> None:
        argv = ["bud", *args]
        if self.cfg.isolation:
            argv += ["--isolation", self.cfg.isolation]
        done = run(self._argv(*argv, str(context)), timeout=self.cfg.timeout_s, stream=True)
        if done.returncode != 0:
            raise StageFailed(
                f"buildah bud failed (exit code {done.returncode}); last lines of its log:\n{done.tail(15)}"
            )

    def build(self, request: BuildRequest) -> None:
        plan, why_not = rt.plan(request.context / "Dockerfile")
        if plan is None:
            progress(f"building every stage in one build ({why_not}: no runtime image of its own)")
            self._bud("--layers", "-f", str(labelled_dockerfile(request)), "-t", request.tag, context=request.context)
            return
        runtime_id = self._runtime_image(request.context, plan)
        for reference in plan.rest_bases:  # none in the shipped template (the model's stage is FROM scratch)
            self._base(reference)
        final = labelled_dockerfile(request, plan.final_dockerfile(runtime_id))
        # nothing left to cache: the runtime image is the cache, the rest is the model (--layers would
        # commit each step as an image and look each one up among all the images in the storage);
        # --pull=false: every base was just resolved as bud's default would, the runtime is used by ID
        self._bud("--layers=false", "--pull=false", "-f", str(final), "-t", request.tag, context=request.context)

    def _inspect(self, reference: str) -> dict | None:
        """buildah's JSON of a local image, or None when there is no such image."""
        done = run(self._argv("inspect", "--type", "image", reference), timeout=120)
        start = done.output.find("{\n")
        if done.returncode != 0 or start < 0:
            return None
        info, _ = json.JSONDecoder().raw_decode(done.output[start:])
        return info

    def _base(self, reference: str) -> dict:
        """The base image as `buildah bud` would use it: pulled when missing; when present and in a registry,
        replaced by the registry's if that differs (bud's default `--pull=true`; errors ignored then, as bud does)."""
        if reference.split("/")[0] != "localhost":
            run(self._argv("pull", "--retry", "0", "--policy", "always", "-q", reference), timeout=self.cfg.timeout_s)
        info = self._inspect(reference)
        if info is None:
            retries = ["--retry", str(self.cfg.retries), "--retry-delay", f"{self.cfg.retry_backoff_s}s"]
            done = run(self._argv("pull", *retries, reference), timeout=self.cfg.timeout_s, stream=True)
            info = self._inspect(reference) if done.returncode == 0 else None
            if info is None:
                raise StageFailed(
                    f"buildah pull of the base image {reference} failed (exit code {done.returncode}); "
                    f"last lines of its log:\n{done.tail(15)}"
                )
        return info

    def _runtime_image(self, context: Path, plan: rt.Plan) -> str:
        """The ID of the runtime image of this context: the one tagged with its key if it is what the key says,
        else built now from the runtime stages alone (with --layers: after a change of the server's code alone
        the dependencies' steps are cached)."""
        bases = {reference: self._base(reference) for reference in plan.bases}
        key = rt.content_key(plan, context, {ref: info["FromImageID"] for ref, info in bases.items()})
        tag = f"{rt.REPOSITORY}:{key}"
        root = bases[plan.root_base]["OCIv1"]["rootfs"]["diff_ids"] if plan.root_base else []

        def verified(info: dict | None) -> bool:
            if info is None:
                return False
            labels = (info["OCIv1"].get("config") or {}).get("Labels") or {}
            layers = info["OCIv1"]["rootfs"]["diff_ids"]
            return labels.get(rt.KEY_LABEL) == key and layers[: len(root)] == root

        found = self._inspect(tag)
        if found is not None and verified(found):
            progress(
                f"reusing the runtime image {tag[: len(rt.REPOSITORY) + 13]} (dependencies, server code, settings)"
            )
            return str(found["FromImageID"])
        progress(f"building the runtime image {tag[: len(rt.REPOSITORY) + 13]} (dependencies, server code, settings)")
        dockerfile = context / ".Dockerfile.runtime"
        dockerfile.write_text(plan.runtime_dockerfile(key), encoding="utf-8")
        # --pull=false: the bases were just resolved as bud would resolve them, and their IDs are in the key
        self._bud("--layers", "--pull=false", "-f", str(dockerfile), "-t", tag, context=context)
        built = self._inspect(tag)
        if built is None or not verified(built):
            raise StageFailed(
                f"the runtime image just built as {tag} is not what its key says (its label, or the layers of "
                f"{plan.root_base} under it): did the base image change during the build? Run build-image again"
            )
        return str(built["FromImageID"])

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
