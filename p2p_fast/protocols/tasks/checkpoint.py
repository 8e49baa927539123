"""WAL checkpoints of the journal, off the event loop.

SQLite checkpoints a WAL database from inside the commit that takes the log past 1000 pages (its
``wal_autocheckpoint``): that commit copies the log's pages into the database file and syncs it, 3-10 ms on the
node's event loop, and such commits were the slowest task round trips in issue 13's benchmark (bench/RESULTS.md,
"Round-trip tail: WAL checkpoints off the event loop"). The journal's connection has the automatic checkpoint off
(:class:`p2p_fast.protocols.tasks.journal.Database`); :class:`Checkpointer` runs a PASSIVE checkpoint instead, on a
connection of its own in a worker thread. PASSIVE never takes the write lock, so the loop's commits go on while it
copies, and SQLite releases the GIL while it works.

When: after commits, at most once every :data:`CHECKPOINT_EVERY_S`. A node at rest commits nothing and so never
checkpoints. A checkpoint that fails (the disk) is logged and retried with the next one; the log keeps every commit
meanwhile, so nothing is lost.

The log file is reused from its start only when a write begins while every frame in it has been copied, which a
thread's checkpoint under a steady stream of commits never sees (more were committed while it copied): the log
would grow without end. So once it holds :data:`RESTART_FRAMES`, the thread passes again until a pass finds at most
:data:`SETTLED_FRAMES` new frames, and then the loop itself checkpoints between two commits
(:meth:`Checkpointer.finish`), copying only those few: about 1 ms where SQLite's own checkpoint of 1000 pages took
3-10, and the next write starts the log over. A burst that outruns the passes leaves the log long until it ends,
or until the log reaches ``FORCE_FACTOR`` times :data:`RESTART_FRAMES`: then the loop finishes regardless.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from pathlib import Path

import trio

log = logging.getLogger(__name__)
CHECKPOINT_EVERY_S = 1.0
RESTART_FRAMES = 2000  # frames (pages) in the log above which the loop finishes a checkpoint so that it restarts
SETTLED_FRAMES = 256  # new frames a thread's pass may find and the loop still copy in about a millisecond
EXTRA_PASSES = 3
FORCE_FACTOR = 8


class Checkpointer:
    """PASSIVE checkpoints of the database at ``path`` in a worker thread, one at a time."""

    def __init__(self, path: Path, every_s: float = CHECKPOINT_EVERY_S, restart_frames: int = RESTART_FRAMES) -> None:
        self.path = path
        self.every_s = every_s
        self.restart_frames = restart_frames
        self.done = 0  # checkpoints completed in the thread
        self.finished = 0  # checkpoints finished on the loop (see finish)
        self.restart_wanted = False  # the log is long: the loop should finish a checkpoint between two commits
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

    def wait_s(self, commits: int) -> float:
        """Seconds until a checkpoint of ``commits`` is due; infinite if none is wanted (or one is under way)."""
        if self.running or self._closed or commits == self._seen:
            return math.inf
        return max(0.0, self._started + self.every_s - time.monotonic())

    def start(self, nursery: trio.Nursery, commits: int, conn: sqlite3.Connection) -> None:
        """Start a checkpoint of ``commits`` (the journal's commit count now, see :meth:`due`) in ``nursery``. Marked
        running at once, not when the task first runs: the commit loop may ask :meth:`due` again before that."""
        self.running, self._seen, self._started = True, commits, time.monotonic()
        nursery.start_soon(self._run, conn)

    async def _run(self, conn: sqlite3.Connection) -> None:
        """A checkpoint in a worker thread, and if the log is long, the loop's finish on ``conn`` (the journal's
        connection) right after it when ``conn`` is between two transactions, else after the journal's next commit."""
        try:
            frames = await trio.to_thread.run_sync(self._checkpoint)
            if frames is None or frames < self.restart_frames:
                return
            for _ in range(EXTRA_PASSES):
                again = await trio.to_thread.run_sync(self._checkpoint)
                if again is None:
                    return
                if again - frames <= SETTLED_FRAMES:
                    break
                frames = again
            else:
                if frames < self.restart_frames * FORCE_FACTOR:
                    return  # a burst outran the passes: the next checkpoint tries again
            self.restart_wanted = True
            if not conn.in_transaction:
                self.finish(conn)
        finally:
            self.running = False

    def _checkpoint(self) -> int | None:
        """One PASSIVE checkpoint; the frames in the log, or None if it failed."""
        with self._lock:
            if self._closed:
                return None
            try:
                if self._conn is None:
                    self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
                _busy, frames, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint of %s failed: %s; the log keeps every commit, retried after the next",
                            self.path, exc)
                return None
            self.done += 1
            return int(frames)

    def finish(self, conn: sqlite3.Connection) -> None:
        """On the loop, between two commits (``conn`` in no transaction): copy what the thread's pass left, so that
        the next write starts the log over. Failures are logged; the log keeps every commit."""
        self.restart_wanted = False
        if self._closed:
            return
        try:
            sqlite3.Connection.execute(conn, "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint of %s failed: %s; the log keeps every commit, retried later", self.path, exc)
            return
        self.finished += 1

    def close(self) -> None:
        """Close the thread's connection (after a checkpoint under way); later checkpoints do nothing."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
