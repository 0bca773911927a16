"""The docker builder: the `docker` Python SDK against any Docker-API engine (Docker itself, or
podman's `podman system service` socket). Insecure registries are the engine's own setting
(Docker's `insecure-registries`, podman's registries.conf), not the client's: credentials go to a
registry the engine reaches without TLS only when it is a loopback address (`engine_plain_http`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StageFailed, TemporaryError
from ..extras import install_line
from ..settings import Settings, is_loopback, registry_host
from . import BuildRequest, registry_failure, with_retries

DIGEST_LINE = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def engine_plain_http(info: dict[str, Any], registry: str) -> bool:
    """Whether the engine (its `GET /info`) talks to `registry` without TLS: its IndexConfigs entry says
    `Secure: false`, or an address of the registry is in InsecureRegistryCIDRs (a name is resolved, as the
    engine does: `art.internal` on 10.1.2.3 is insecure under 10.1.0.0/16)."""
    import ipaddress
    import socket

    config = info.get("RegistryConfig") or {}
    hostport = registry.split("/")[0]
    index = (config.get("IndexConfigs") or {}).get(hostport) or (config.get("IndexConfigs") or {}).get(
        registry_host(registry)
    )
    if isinstance(index, dict) and index.get("Secure") is False:
        return True
    cidrs = []
    for cidr in config.get("InsecureRegistryCIDRs") or []:
        try:
            cidrs.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue
    if not cidrs:
        return False
    host = registry_host(registry)
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(str(a[4][0]).split("%")[0]) for a in socket.getaddrinfo(host, None)}
        except (OSError, UnicodeError, ValueError):  # not resolvable here: the engine cannot push there either
            return False
    return any(address in cidr for address in addresses for cidr in cidrs if address.version == cidr.version)


def engine_reason(exc: BaseException, limit: int = 400) -> str:
    """The engine client's error as one whole line: its first line, cut only at a clause boundary when long."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(text) <= limit:
        return text
    cut = max(text.rfind(sep, 0, limit) for sep in (". ", "; ", ": ", ", ", " ("))
    return (text[:cut] if cut > limit // 2 else text[:limit].rsplit(" ", 1)[0]) + " [...]"


class DockerBuilder:
    def __init__(self, settings: Settings):
        self.cfg = settings.build
        try:
            import docker
        except ImportError as exc:
            raise ConfigError("the docker builder needs the docker package", hint=install_line("docker")) from exc
        self._errors = docker.errors
        where = self.cfg.docker_host or "DOCKER_HOST or the default socket"
        host = self.cfg.docker_host or ""
        socket_path = Path(host.removeprefix("unix://")) if host.startswith("unix://") else None
        if socket_path is not None and not socket_path.exists():
            raise ConfigError(
                f"no Docker-API engine answers at {self.cfg.docker_host}: the socket does not exist",
                hint="start Docker or `podman system service`, or set build.docker_host",
            )
        client = None
        try:
            client = (
                docker.DockerClient(base_url=self.cfg.docker_host, timeout=int(self.cfg.timeout_s))
                if self.cfg.docker_host
                else docker.from_env(timeout=int(self.cfg.timeout_s))
            )
            client.ping()
        except docker.errors.DockerException as exc:
            if client is not None:
                client.close()
            raise ConfigError(
                f"no Docker-API engine answers at {where}: {engine_reason(exc)}",
                hint="start Docker or `podman system service`, or set build.docker_host",
            ) from None
        self.client = client

    def close(self) -> None:
        self.client.close()

    def build(self, request: BuildRequest) -> None:
        lines: list[str] = []
        try:
            for event in self.client.api.build(
                path=str(request.context),
                dockerfile="Dockerfile",
                tag=request.tag,
                labels=request.labels,
                rm=True,
                forcerm=True,
                decode=True,
            ):
                lines += [line for line in str(event.get("stream", "")).splitlines() if line.strip()]
                if "error" in event or "errorDetail" in event:
                    lines.append(str(event.get("error") or event["errorDetail"].get("message")))
                    raise StageFailed("the image build failed; last lines of its log:\n" + "\n".join(lines[-15:]))
        except self._errors.APIError as exc:
            raise StageFailed(f"the engine refused the build: {exc.explanation or exc}") from None
        if not self.client.images.list(name=request.tag):
            raise StageFailed(
                "the engine reported no image after the build; last lines of its log:\n" + "\n".join(lines[-15:])
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
        repository, _, name = tag.rpartition(":")
        auth: dict[str, Any] | None = None
        password = self.cfg.registry_password()
        if self.cfg.username and password is not None:
            auth = {"username": self.cfg.username, "password": password}
            if not is_loopback(registry_host(registry)):
                try:
                    info = self.client.info()
                except self._errors.DockerException as exc:
                    raise TemporaryError(f"lost the engine before pushing to {registry}: {exc}") from None
                if engine_plain_http(info, registry):
                    raise ConfigError(
                        f"the engine reaches {registry} without TLS (an insecure registry in its "
                        "configuration): the registry credentials would go out in clear text",
                        hint="give the registry a certificate and drop it from the engine's "
                        "insecure registries, or use a registry on this machine",
                    )
        digest = None
        said: list[str] = []
        try:
            for event in self.client.api.push(repository, tag=name, auth_config=auth, stream=True, decode=True):
                if "error" in event or "errorDetail" in event:
                    said.append(str(event.get("error") or event["errorDetail"].get("message")))
                    raise registry_failure(registry, "\n".join(said))
                status = str(event.get("status", ""))
                said.append(status)
                # Docker sends the digest as aux and as "TAG: digest: sha256:... size: N"; podman only the latter
                found = DIGEST_LINE.search(status)
                digest = (event.get("aux") or {}).get("Digest") or (found.group(1) if found else digest)
        except self._errors.APIError as exc:
            raise registry_failure(registry, str(exc.explanation or exc)) from None
        except self._errors.DockerException as exc:
            raise TemporaryError(f"lost the engine while pushing to {registry}: {exc}") from None
        if not digest:
            raise StageFailed(f"the engine did not report the digest of {tag} after the push")
        return digest
