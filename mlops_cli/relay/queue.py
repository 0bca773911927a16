"""A bounded on-disk queue of notifications, one directory per sink, oldest first.

Each item is one JSON file written to a temporary name, fsynced and renamed into place, so a
crash never leaves half an item and nothing accepted is lost across a restart. Names sort by
arrival time. A sink's queue holds at most `max_items`; `put` refuses (QueueFull) rather than
dropping anything, and the relay answers 503 so the sender (Alertmanager, Grafana) retries.
Items a sink will never accept (a permanent error) move to `<sink>/dead/` and stay there.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ..notifiers import Notification


class QueueFull(Exception):
    pass


@dataclass(frozen=True)
class Item:
    sink: str
    path: Path
    note: Notification


class DiskQueue:
    def __init__(self, directory: Path, sinks: Iterable[str], max_items: int):
        self.directory = Path(directory)
        self.max_items = max_items
        self.sinks = list(sinks)
        self._seq = itertools.count()
        for sink in self.sinks:
            (self.directory / sink / "dead").mkdir(parents=True, exist_ok=True)
            for stale in (self.directory / sink).glob(".*.tmp"):  # a write cut short by a crash
                stale.unlink(missing_ok=True)

    def _items(self, sink: str) -> list[Path]:
        return sorted(p for p in (self.directory / sink).glob("*.json"))

    def depth(self, sink: str) -> int:
        return len(self._items(sink))

    def dead(self, sink: str) -> int:
        return len(list((self.directory / sink / "dead").glob("*.json")))

    def put(self, notes: list[Notification]) -> None:
        """Queue every note for every sink, or nothing at all (QueueFull)."""
        for sink in self.sinks:
            if self.depth(sink) + len(notes) > self.max_items:
                raise QueueFull(f"the {sink} queue holds {self.depth(sink)} alerts (max {self.max_items})")
        for sink in self.sinks:
            for note in notes:
                self._write(sink, note)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write(self, sink: str, note: Notification) -> None:
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}.json"
        tmp = self.directory / sink / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(note.as_event(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / sink / name)

    def oldest(self, sink: str) -> Optional[Item]:
        for path in self._items(sink):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                return Item(sink, path, Notification(**data))
            except (OSError, ValueError, TypeError):  # unreadable: keep it aside, never lose it silently
                path.rename(path.parent / "dead" / path.name)
        return None

    def done(self, item: Item) -> None:
        item.path.unlink(missing_ok=True)

    def bury(self, item: Item) -> None:
        item.path.rename(item.path.parent / "dead" / item.path.name)
