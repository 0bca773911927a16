"""The chatops audit log: one JSON line per decision (accepted, refused, approved, rejected, failed),
appended to `chatops.audit_log` and logged on `mlops.chatops.audit`. No secrets go in: who, where,
what they asked, what happened and why."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Optional

from ..state import now

log = logging.getLogger("mlops.chatops.audit")


class AuditLog:
    def __init__(self, path: Optional[Path]):
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

    def entries(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return []
        with self._lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
