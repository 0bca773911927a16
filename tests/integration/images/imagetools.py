"""Helpers for the image tests: what the registry itself says about a pushed image."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

CACHE = Path.home() / ".cache" / "mlops-tests"
BASE_IMAGE = "localhost/mlops-python-base:bookworm"
MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def manifest_digest(registry: str, repository: str, reference: str) -> str:
    """The digest the registry itself reports for a manifest (Docker-Content-Digest)."""
    answer = httpx.head(f"http://{registry}/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
    answer.raise_for_status()
    return answer.headers["Docker-Content-Digest"]


def image_layers(registry: str, repository: str, digest: str) -> list[str]:
    answer = httpx.get(f"http://{registry}/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES})
    answer.raise_for_status()
    return [layer["digest"] for layer in answer.json()["layers"]]


def podman(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ)
    )
