"""A bounded on-disk queue of notifications, one directory per sink, oldest first.

Each item is one JSON file, written to a temporary name in `<dir>/incoming` and fsynced once; a
`put` writes all its items first and only then hard-links them into every sink's directory and
fsyncs those directories, so a full disk never leaves half an alert group queued, and nothing
acknowledged is lost across a crash or restart. Each sink owns its link: delivering, burying or
requeueing an item touches no other sink's copy. Names are sequence numbers from a monotonic
counter, so they sort in arrival order whatever the clock does; `<dir>/seq` persists a ceiling
reserved SEQ_BLOCK numbers ahead (one fsync per block), and a start continues after both the
ceiling and the newest file, so no name is handed out twice.
The index lives in memory (per sink: the set of names and a min-heap of them), built from the
directories once at start, so `put`, `depth`, `oldest` and `done` cost the same with 10 or 10,000
alerts waiting: intake never lists or sorts a directory. Only the bound check and the numbering
hold the lock; concurrent puts write and fsync side by side. `rescan` adds files put there by
another process (`mlops alert-relay --requeue-dead`); the delivery workers call it every
max_backoff_s.
A sink's queue holds at most `max_items`; `put` refuses (QueueFull) rather than dropping anything,
and the relay answers 503 so the sender (Alertmanager, Grafana) retries.
Items a sink will never accept (a permanent error), and files that cannot be read back, move to
`<sink>/dead/`, which keeps at most `dead_max` items (the oldest are dropped, each with a log line).
`requeue_dead` moves dead letters back into the queue.
One relay owns a queue directory (`exclusive`: an flock on `<dir>/lock`, dropped by the kernel however
the relay ends): a second one would hand out the same names and deliver every alert twice. Only the
owner removes the `.tmp` files of writes cut short; `mlops alert-relay --requeue-dead` opens the queue
without either, so it can run beside the relay without deleting a write under way.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..notifiers import Notification

log = logging.getLogger("mlops.relay")
_NUMBERED = re.compile(r"^(\d+)")
SEQ_BLOCK = 1000


class QueueFull(Exception):
    pass


class QueueBusy(Exception):
    """Another process owns the queue directory."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Item:
    sink: str
    path: Path
    note: Notification


class _Index:
    """One sink's queued file names: a set (membership, depth) and a min-heap (the oldest), with lazy deletion."""

    def __init__(self, names: Iterable[str] = ()):
        self.names = set(names)
        self.heap = sorted(self.names)

    def add(self, name: str) -> None:
        if name not in self.names:
            self.names.add(name)
            heapq.heappush(self.heap, name)

    def discard(self, name: str) -> None:
        self.names.discard(name)
        if not self.names:
            self.heap.clear()

    def oldest(self) -> str | None:
        while self.heap and self.heap[0] not in self.names:
            heapq.heappop(self.heap)
        return self.heap[0] if self.heap else None


class DiskQueue:
    def __init__(
        self,
        directory: Path,
        sinks: Iterable[str],
        max_items: int,
        dead_max: int = 1000,
        on_unreadable: Callable[[str], None] | None = None,
        on_dropped: Callable[[str], None] | None = None,
        exclusive: bool = False,
        clean: bool = True,
    ):
        self.directory = Path(directory)
        self.max_items = max_items
        self.dead_max = dead_max
        self.sinks = list(sinks)
        self.on_unreadable = on_unreadable
        self.on_dropped = on_dropped
        self._lock = threading.Lock()
        self._incoming = self.directory / "incoming"  # where a note is written before the sinks link to it
        self._incoming.mkdir(parents=True, exist_ok=True)
        for sink in self.sinks:
            (self.directory / sink / "dead").mkdir(parents=True, exist_ok=True)
        self._owner_fd = self._claim() if exclusive else None
        if clean:  # (never beside a running relay: its writes under way are .tmp files too)
            for folder in [self._incoming, *(self.directory / sink for sink in self.sinks)]:
                for stale in folder.glob(".*.tmp"):  # a write cut short by a crash (never acknowledged)
                    stale.unlink(missing_ok=True)
        self._index = {sink: _Index(self._listed(sink)) for sink in self.sinks}
        self._seq_file = self.directory / "seq"
        self._next = self._load_seq()
        self._ceiling = self._next  # numbers below it are persisted as handed out
        self._pending = 0  # notes (per sink) of puts under way: counted against max_items

    def _claim(self) -> int:
        """Own the directory (an exclusive flock on `<dir>/lock`, holding our PID) or raise QueueBusy."""
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise QueueBusy(f"the relay queue {self.directory} is in use by another relay (pid {holder})") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def close(self) -> None:
        """Release the directory (when owned)."""
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def _listed(self, sink: str) -> list[str]:
        with os.scandir(self.directory / sink) as entries:
            return [e.name for e in entries if e.name.endswith(".json") and not e.name.startswith(".")]

    def _load_seq(self) -> int:
        try:
            stored = int(self._seq_file.read_text().strip() or 0)
        except FileNotFoundError:
            stored = 0
        except ValueError:
            log.error("relay queue counter %s unreadable: starting after the newest item", self._seq_file)
            stored = 0
        newest = -1
        for sink in self.sinks:
            for name in [*self._index[sink].names, *(p.name for p in (self.directory / sink / "dead").glob("*.json"))]:
                m = _NUMBERED.match(name)
                if m:
                    newest = max(newest, int(m.group(1)))
        return max(stored, newest + 1)

    def _reserve(self, count: int) -> int:
        """`count` new sequence numbers, persisted before any is used (never handed out twice): the file holds a
        ceiling reserved SEQ_BLOCK numbers ahead, so most calls write nothing."""
        first = self._next
        if first + count > self._ceiling:
            ceiling = first + count + SEQ_BLOCK
            tmp = self._seq_file.with_name(".seq.tmp")
            with open(tmp, "w", encoding="ascii") as f:
                f.write(str(ceiling))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._seq_file)
            _fsync_dir(self.directory)  # the new ceiling survives a power cut before any number under it is used
            self._ceiling = ceiling
        self._next = first + count
        return first

    def depth(self, sink: str) -> int:
        return len(self._index[sink].names)

    def dead(self, sink: str) -> int:
        return len(list((self.directory / sink / "dead").glob("*.json")))

    def put(self, notes: list[Notification]) -> None:
        """Queue every note for every sink, or nothing at all (QueueFull, or the OSError of the disk).
        When it returns, every file and its directory entry are on disk (fsynced).

        Only the bound check and the numbering hold the lock; the writes and fsyncs of concurrent puts run side
        by side (the filesystem commits their fsyncs together), so intake does not queue behind the disk."""
        with self._lock:
            for sink in self.sinks:
                depth = self.depth(sink) + self._pending
                if depth + len(notes) > self.max_items:
                    raise QueueFull(f"the {sink} queue holds {depth} alerts (max {self.max_items})")
            first = self._reserve(len(notes))
            self._pending += len(notes)
        written: list[Path] = []
        placed: list[Path] = []
        try:
            for i, note in enumerate(notes):  # each note once, fsynced; every sink gets a hard link to it
                tmp = self._incoming / f".{first + i:020d}.json.tmp"
                written.append(tmp)
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(note.as_event(), f)
                    f.flush()
                    os.fsync(f.fileno())
            for sink in self.sinks:
                for tmp in written:
                    final = self.directory / sink / tmp.name[1 : -len(".tmp")]
                    os.link(tmp, final)
                    placed.append(final)
            for sink in self.sinks:
                _fsync_dir(self.directory / sink)
        except BaseException:
            for path in placed + written:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            with self._lock:
                self._pending -= len(notes)
            raise
        for tmp in written:  # the sinks' links keep the data
            try:
                tmp.unlink()
            except OSError:  # left over: removed at the next start
                pass
        with self._lock:
            self._pending -= len(notes)
            for final in placed:
                self._index[final.parent.name].add(final.name)

    def oldest(self, sink: str) -> Item | None:
        index = self._index[sink]
        while True:
            with self._lock:
                name = index.oldest()
            if name is None:
                return None
            path = self.directory / sink / name
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                return Item(sink, path, Notification(**data))
            except FileNotFoundError:  # removed meanwhile (by another process): no longer queued
                with self._lock:
                    index.discard(name)
                continue
            except (OSError, ValueError, TypeError) as exc:  # unreadable: keep it aside, never lose it silently
                log.error("%s queue item %s unreadable (%s): moved to dead/", sink, path.name, type(exc).__name__)
                self._to_dead(sink, path)
                if self.on_unreadable is not None:
                    self.on_unreadable(sink)

    def done(self, item: Item) -> None:
        item.path.unlink(missing_ok=True)
        with self._lock:
            self._index[item.sink].discard(item.path.name)

    def bury(self, item: Item) -> None:
        self._to_dead(item.sink, item.path)

    def _to_dead(self, sink: str, path: Path) -> None:
        dead = self.directory / sink / "dead"
        try:
            path.rename(dead / path.name)
        except FileNotFoundError:  # gone meanwhile: no longer queued either
            pass
        with self._lock:
            self._index[sink].discard(path.name)
        letters = sorted(dead.glob("*.json"))
        for old in letters[: max(0, len(letters) - self.dead_max)]:
            old.unlink(missing_ok=True)
            log.error("%s dead letters over relay.dead_max (%d): dropped the oldest, %s", sink, self.dead_max, old.name)
            if self.on_dropped is not None:
                self.on_dropped(sink)

    def rescan(self, sink: str) -> int:
        """Add files that appeared in the sink's directory without `put` (dead letters moved back by another
        process); how many. Lists the directory outside the lock: intake is not held up."""
        listed = self._listed(sink)
        with self._lock:
            index = self._index[sink]
            new = [name for name in listed if name not in index.names]
            for name in new:
                index.add(name)
        return len(new)

    def requeue_dead(self, sink: str) -> int:
        """Move the sink's dead letters back into its queue (in their original order); how many."""
        with self._lock:
            moved = 0
            for path in sorted((self.directory / sink / "dead").glob("*.json")):
                try:
                    os.replace(path, self.directory / sink / path.name)
                except FileNotFoundError:  # dropped meanwhile by the running relay (beyond dead_max)
                    continue
                self._index[sink].add(path.name)
                moved += 1
            return moved
