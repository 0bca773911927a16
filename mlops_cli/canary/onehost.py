"""Helpers shared by the one-machine canaries (local and container targets): free ports, the
target's own JSON files, PromQL selectors and the Prometheus file_sd targets labelled by track."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Optional


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


def read_json(path: Path) -> Optional[dict]:
    """The dict in path; None when it is missing or not a JSON object."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def selector(track: str, env: str) -> str:
    return f'track="{track}",env="{env}"'


def write_file_sd(path: Path, env: str, members: list[tuple[str, str, Optional[int]]]) -> None:
    """Prometheus file_sd targets: (track, host:port, revision) each, labelled track/env/revision."""
    write_json(path, [
        {"targets": [address], "labels": {"track": track, "env": env,
                                          **({"revision": str(rev)} if rev is not None else {})}}
        for track, address, rev in members])
