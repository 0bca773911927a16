"""The chatops audit log: one JSON line per decision (accepted, refused, approved, rejected, failed),
appended to `chatops.audit_log` and logged on `mlops.chatops.audit`. No secrets go in: who, where,
what they asked, what happened and why."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from ..state import now

log = logging.getLogger("mlops.chatops.audit")


class AuditLog:
    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {"at": now(), "event": event, **{k: v for k, v in fields.items() if v is not None}}
        log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "event")))
        if self.path is not None:
            line = json.dumps(entry, sort_keys=True) + "\n"
            with self._lock:
                try:
                    with open(self.path, "a", encoding="utf-8") as f:
                        f.write(line)
                except OSError as exc:
                    log.error("cannot append to the audit log %s: %s", self.path, exc.strerror)
        return entry

    def entries(self, tail_bytes: int = 1 << 20) -> list[dict[str, Any]]:
        """The newest entries (those in the file's last tail_bytes): what `status` needs to tell who asked,
        read in bounded time however long the service has run."""
        if self.path is None or not self.path.is_file():
            return []
        with self._lock, open(self.path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - tail_bytes))
            data = f.read()
        lines = data.decode("utf-8", "replace").splitlines()
        if size > tail_bytes and lines:
            lines = lines[1:]  # the first line read is likely cut
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
