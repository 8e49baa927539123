"""WAL checkpoints of the journal, off the event loop.

SQLite checkpoints a WAL database from inside the commit that takes the log past 1000 pages (its
``wal_autocheckpoint``): that commit copies the log's pages into the database file and syncs it, 3-10 ms on the
node's event loop, and such commits were the slowest task round trips in issue 13's benchmark (bench/RESULTS.md,
"Round-trip tail: WAL checkpoints off the event loop"). The journal's connection has the automatic checkpoint off
(:class:`p2p_fast.protocols.tasks.journal.Database`); :class:`Checkpointer` runs a PASSIVE checkpoint instead, on a
connection of its own in a worker thread. PASSIVE never takes the write lock, so the loop's commits go on while it
copies, and SQLite releases the GIL while it works.

When: after commits, at most once every :data:`CHECKPOINT_EVERY_S`; the log stays within about a second of writes.
A node at rest commits nothing and so never checkpoints. A checkpoint that fails (the disk) is logged and retried
with the next one; the log keeps every commit meanwhile, so nothing is lost.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import trio

log = logging.getLogger(__name__)
CHECKPOINT_EVERY_S = 1.0


class Checkpointer:
    """PASSIVE checkpoints of the database at ``path`` in a worker thread, one at a time."""

    def __init__(self, path: Path, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.path = path
        self.every_s = every_s
        self.done = 0  # checkpoints completed
        self.running = False
        self._started = float("-inf")  # time.monotonic() of the last checkpoint's start
        self._seen = 0  # the journal's commit count when the last checkpoint started
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the thread's connection against close()
        self._closed = False

    def due(self, commits: int) -> bool:
        """A checkpoint should start: there were commits since the last one, which started long enough ago."""
        return (not self.running and not self._closed and commits != self._seen
                and time.monotonic() - self._started >= self.every_s)

    async def run(self, commits: int) -> None:
        """One checkpoint in a worker thread; ``commits`` is the journal's commit count now (see :meth:`due`)."""
        self.running, self._seen, self._started = True, commits, time.monotonic()
        try:
            await trio.to_thread.run_sync(self._checkpoint)
        finally:
            self.running = False

    def _checkpoint(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if self._conn is None:
                    self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint of %s failed: %s; the log keeps every commit, retried after the next",
                            self.path, exc)
                return
            self.done += 1

    def close(self) -> None:
        """Close the thread's connection (after a checkpoint under way); later checkpoints do nothing."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
