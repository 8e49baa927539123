"""The submitter's durable record of its tasks (SQLite in the data dir), shared with the ledger.

One database file, ``<data_dir>/tasks.sqlite3``, holds the task journal, the ledger and reputation, so that "task
completed" and "credit spent" are one transaction: a crash can never leave a paid task pending or a finished task
unpaid. Writes happen at once on the event loop (they are small) inside an open transaction; :class:`Database`
commits them in groups — right after the burst of work that is ready now — and ``durable()`` waits for that commit.
The journal uses WAL with ``synchronous=NORMAL``: a committed task survives the node being killed (kill -9), an
operating-system crash may lose the last moments. A commit only appends to the log; the log is copied into the
database file by :class:`~p2p_fast.protocols.tasks.checkpoint.Checkpointer` in a worker thread, never inside a
commit on the event loop.

A write that fails for lack of space or an I/O error (disk full, quota, read-only) raises :class:`StorageError`.
SQLite rolls the open transaction back, so the journal stays exactly at its last commit; but the group's writes
already took effect in memory, so the database refuses every later write and calls ``on_failure`` (the node stops,
naming the data dir, and resumes from the journal when restarted with space). Only a write run through
:meth:`Database.write_alone` (a task submission) fails alone: the client is told, nothing else is lost.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import trio

from p2p_fast.protocols.tasks.checkpoint import Checkpointer

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    capability TEXT NOT NULL,
    payload BLOB NOT NULL,
    reward INTEGER NOT NULL,
    timeout_s REAL NOT NULL,
    max_retries INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    state TEXT NOT NULL,
    worker TEXT,
    result BLOB,
    error TEXT,
    attempts TEXT NOT NULL DEFAULT '[]',
    redundancy INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(state, created);
CREATE TABLE IF NOT EXISTS ledger (
    task_id TEXT NOT NULL,
    submitter TEXT NOT NULL,
    worker TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('earned', 'spent')),
    amount INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    result_digest TEXT NOT NULL,
    issued_at REAL NOT NULL,
    signature BLOB NOT NULL,
    submitter_key BLOB NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, submitter, direction)
);
CREATE INDEX IF NOT EXISTS ledger_owed ON ledger(worker) WHERE direction = 'spent' AND delivered = 0;
CREATE TABLE IF NOT EXISTS reputation (
    peer_id TEXT PRIMARY KEY,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    timeouts INTEGER NOT NULL DEFAULT 0
);
"""

log = logging.getLogger(__name__)
LAZY_COMMIT_S = 1.0
PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "pending", "running", "completed", "failed", "cancelled"
STATES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
FINAL_STATES = (COMPLETED, FAILED, CANCELLED)


class StorageError(RuntimeError):
    """The journal cannot be written (disk or quota full, I/O error); what was committed is intact."""


_STORAGE_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")
_READS = ("SELECT", "PRAGMA")


class _GuardedConnection(sqlite3.Connection):
    """A connection whose storage failures become :class:`StorageError` (see the module docstring)."""

    db: "Database | None" = None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self._check(sql)
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            raise self._storage_error(exc) from None

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        self._check(sql)
        try:
            return super().executemany(sql, parameters)
        except sqlite3.OperationalError as exc:
            raise self._storage_error(exc) from None

    def commit(self) -> None:
        try:
            super().commit()
        except sqlite3.OperationalError as exc:
            raise self._storage_error(exc) from None

    def _check(self, sql: str) -> None:
        db = self.db
        if db is not None and db.failed is not None and not sql.lstrip()[:6].upper().startswith(_READS):
            raise StorageError(db.failed)

    def _storage_error(self, exc: sqlite3.OperationalError) -> BaseException:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if self.db is None or not name.startswith(_STORAGE_ERRORS):
            return exc
        return self.db.storage_failed(exc)


class Database:
    """One SQLite connection with group commit (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.failed: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self._isolated = False
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, factory=_GuardedConnection)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's thread copies the log
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='tasks'").fetchone():
                have = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
                if "redundancy" not in have:  # a journal written before redundant tasks existed
                    conn.execute("ALTER TABLE tasks ADD COLUMN redundancy INTEGER NOT NULL DEFAULT 1")
            conn.executescript(SCHEMA)
            conn.commit()
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot open the journal {path}: {exc} (is the data dir full or read-only?)") from None
        self.conn: _GuardedConnection = conn
        conn.db = self
        self.checkpointer = Checkpointer(path)
        self.dirty = False
        self._wake = trio.Event()
        self._kick = trio.Event()  # set by every write: ends the commit loop's sleep at rest
        self._done = trio.Event()
        self._after: list[Callable[[], None]] = []
        self._before: list[Callable[[], None]] = []
        self.commits = 0
        self.committed_at = 0.0  # time.monotonic() of the last commit
        self.closed = False

    def touch(self, lazy: bool = False) -> None:
        """Something was written: commit soon (``lazy``: with the next commit, or within a second — for writes that
        may be lost in a crash, like reputation counters and receipt delivery marks)."""
        self.dirty = True
        if not lazy:
            self._wake.set()
        self._kick.set()  # the commit loop may be asleep without a deadline (nothing was pending)

    async def durable(self) -> None:
        """Return once everything written so far is committed."""
        if self.dirty:
            await self._done.wait()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` right after the commit that makes what was written so far durable."""
        if not self.dirty:
            callback()  # everything is committed already
            return
        self._after.append(callback)
        self._wake.set()

    def before_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at the start of every commit, inside its transaction: writes deferred to be done once per
        commit (a batch of receipts signed together) are as durable as what they belong to."""
        self._before.append(hook)

    def storage_failed(self, exc: Exception) -> StorageError:
        """A write failed for lack of space or an I/O error: roll back; unless isolated, refuse all later writes."""
        try:
            sqlite3.Connection.rollback(self.conn)
        except sqlite3.Error:
            pass
        self.dirty = False
        self._after.clear()  # what they were waiting for was rolled back
        msg = (f"cannot write the journal {self.path}: {exc} — the data dir is full or failing; the journal keeps "
               "its last commit")
        if self._isolated:
            return StorageError(msg)
        if self.failed is None:
            self.failed = msg + "; free space and restart the node: unfinished tasks resume"
            if self.on_failure is not None:
                self.on_failure(self.failed)  # logs it and stops the node
            else:
                log.critical("%s", self.failed)
        return StorageError(self.failed)

    def write_alone(self, write: Callable[[], None]) -> None:
        """Commit what is pending, then run ``write`` in a transaction of its own and commit it. A storage failure
        inside ``write`` rolls back only what it wrote and raises :class:`StorageError`; the database goes on."""
        self.commit_now()
        if self.failed is not None:
            raise StorageError(self.failed)
        self._isolated = True
        try:
            write()
            self.commit_now()
        finally:
            self._isolated = False

    def commit_now(self) -> None:
        if self.closed or self.failed is not None:
            return
        for hook in self._before:
            try:
                hook()
            except StorageError:
                if self._isolated:
                    raise
                return  # its write failed: rolled back (storage_failed), and the node stops
            except Exception:
                log.exception("before-commit hook failed")
        if self.dirty:
            self.conn.commit()
            self.dirty = False
            self.commits += 1
            self.committed_at = time.monotonic()
        done, self._done = self._done, trio.Event()
        done.set()
        callbacks, self._after = self._after, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("after-commit callback failed")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    if not self.dirty:
                        # At rest no deadline but a due checkpoint's: a timer a second was an idle node's cost.
                        with trio.move_on_after(self.checkpointer.wait_s(self.commits)):
                            await self._kick.wait()
                        self._kick = trio.Event()
                    if self.dirty:
                        with trio.move_on_after(LAZY_COMMIT_S):
                            await self._wake.wait()
                    self._wake = trio.Event()
                    # Everything written since the wake-up (a whole batch of responses read in one go) commits
                    # together.
                    self.commit_now()
                    if self.checkpointer.restart_wanted and not self.conn.in_transaction and self.failed is None:
                        self.checkpointer.finish(self.conn)
                    if self.checkpointer.due(self.commits):
                        self.checkpointer.start(nursery, self.commits, self.conn)
            finally:
                self.commit_now()

    def close(self) -> None:
        try:
            self.commit_now()
        finally:
            self.closed = True
            self.checkpointer.close()
            self.conn.close()


@dataclass
class Attempt:
    n: int
    worker: str
    started: float
    ended: float | None = None
    outcome: str = "running"  # running, ok, failed, invalid, rejected, timeout, disconnected, cancelled, interrupted
    reason: str = ""
    counted: bool = True  # counts against max_retries

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "worker": self.worker, "started": self.started, "ended": self.ended,
                "outcome": self.outcome, "reason": self.reason, "counted": self.counted}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Attempt":
        return cls(int(d["n"]), str(d["worker"]), float(d["started"]), d.get("ended"), str(d.get("outcome", "")),
                   str(d.get("reason", "")), bool(d.get("counted", True)))


@dataclass
class TaskRecord:
    id: str
    type: str
    capability: str
    payload: bytes
    reward: int
    timeout_s: float
    max_retries: int
    created: float
    state: str = PENDING
    worker: str | None = None
    result: bytes | None = None
    error: str | None = None
    finished: float | None = None
    updated: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    redundancy: int = 1  # workers that must agree on the result (2 for a spot-checked task)
    # Not journaled: scheduling state of a live task.
    waiting_since: float = field(default=0.0, repr=False, compare=False)
    deadline: float = field(default=0.0, repr=False, compare=False)
    not_before: float = field(default=0.0, repr=False, compare=False)
    # Workers this record must not go to: those that refused it for credit, and for a replica of a redundant task
    # every worker its siblings used (shared set). ``group``: the redundant task a replica belongs to.
    avoid: set[str] | None = field(default=None, repr=False, compare=False)
    group: Any = field(default=None, repr=False, compare=False)

    @property
    def counted_attempts(self) -> int:
        return sum(1 for a in self.attempts if a.counted)

    def result_text(self) -> str | None:
        if self.result is None:
            return None
        return self.result.decode("utf-8", errors="replace")

    def as_dict(self, with_payload: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, "type": self.type, "state": self.state, "worker": self.worker,
            "reward": self.reward, "timeout_s": self.timeout_s, "max_retries": self.max_retries,
            "created": self.created, "finished": self.finished,
            "attempts": [a.as_dict() for a in self.attempts],
            "error": self.error,
            "redundancy": self.redundancy,
        }
        if self.result is not None:
            try:
                doc["result"] = self.result.decode("utf-8")
                doc["result_encoding"] = "utf-8"
            except UnicodeDecodeError:
                import base64

                doc["result"] = base64.b64encode(self.result).decode()
                doc["result_encoding"] = "base64"
        else:
            doc["result"] = None
        if with_payload:
            doc["payload_size"] = len(self.payload)
        return doc


_COLUMNS = ("id, type, capability, payload, reward, timeout_s, max_retries, created, updated, finished, state, "
            "worker, result, error, attempts, redundancy")


class TaskJournal:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn = db.conn
        # Final states waiting to be written (finish): one executemany per commit instead of one UPDATE per task.
        # Written by the commit's before-commit hook, so still in the transaction that makes them durable, and
        # before any read of this journal (reads see their own writes).
        self._finished: list[tuple[Any, ...]] = []
        db.before_commit(self.flush)

    def flush(self) -> None:
        if self._finished:
            rows, self._finished = self._finished, []
            self.conn.executemany(
                "UPDATE tasks SET state=?, worker=?, result=?, error=?, attempts=?, updated=?, finished=? WHERE id=?",
                rows)

    def insert_many(self, records: list[TaskRecord]) -> None:
        now = time.time()
        self.conn.executemany(
            f"INSERT INTO tasks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(r.id, r.type, r.capability, r.payload, r.reward, r.timeout_s, r.max_retries, r.created, now, None,
              PENDING, None, None, None, "[]", r.redundancy) for r in records])
        self.db.touch()

    def save_attempts(self, rec: TaskRecord) -> None:
        self.flush()
        self.conn.execute("UPDATE tasks SET attempts=?, updated=? WHERE id=?",
                          (json.dumps([a.as_dict() for a in rec.attempts]), time.time(), rec.id))
        self.db.touch()

    def finish(self, rec: TaskRecord) -> None:
        self._finished.append((rec.state, rec.worker, rec.result, rec.error,
                               json.dumps([a.as_dict() for a in rec.attempts]), time.time(), rec.finished, rec.id))
        self.db.touch()

    def _row(self, row: tuple[Any, ...]) -> TaskRecord:
        (id_, type_, cap, payload, reward, timeout_s, max_retries, created, updated, finished, state, worker,
         result, error, attempts, redundancy) = row
        return TaskRecord(id_, type_, cap, bytes(payload), int(reward), float(timeout_s), int(max_retries),
                          float(created), state, worker, bytes(result) if result is not None else None, error,
                          finished, float(updated), [Attempt.from_dict(a) for a in json.loads(attempts or "[]")],
                          int(redundancy or 1))

    def get(self, task_id: str) -> TaskRecord | None:
        self.flush()
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id=?", (task_id,)).fetchone()
        return self._row(row) if row else None

    def unfinished(self) -> Iterator[TaskRecord]:
        self.flush()
        cur = self.conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE state IN (?, ?) ORDER BY created",
                                (PENDING, RUNNING))
        for row in cur:
            yield self._row(row)

    def list(self, state: str | None, limit: int, offset: int) -> list[TaskRecord]:
        self.flush()
        if state:
            cur = self.conn.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE state=? ORDER BY created, id LIMIT ? OFFSET ?",
                (state, limit, offset))
        else:
            cur = self.conn.execute(f"SELECT {_COLUMNS} FROM tasks ORDER BY created, id LIMIT ? OFFSET ?",
                                    (limit, offset))
        return [self._row(r) for r in cur]

    def state_counts(self) -> dict[str, int]:
        self.flush()
        return {s: n for s, n in self.conn.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state")}
