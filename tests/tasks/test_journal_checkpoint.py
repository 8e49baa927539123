"""The journal's WAL is checkpointed off the event loop: a commit on the loop only appends to the log, and a
background checkpoint (a thread, a connection of its own) copies the log into the database file.

Why it matters: SQLite's automatic checkpoint runs inside the commit that takes the log past 1000 pages, copying and
syncing on the node's event loop (3-10 ms each time); those commits were the slowest task round trips of issue 13's
benchmark."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from p2p_fast.protocols.tasks.journal import Database, TaskJournal, TaskRecord

PAYLOAD = b"p" * 3000  # about one 4 KiB page per task row


def _write_tasks(db: Database, first: int, n: int) -> None:
    journal = TaskJournal(db)
    for i in range(first, first + n):
        journal.insert_many([TaskRecord(f"{i:032x}", "echo", "compute", PAYLOAD, 1, 5.0, 3, float(i))])
        db.commit_now()  # one commit per task, as a lone round trip does


def test_commits_on_the_loop_never_copy_the_log_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"

    async def main() -> None:
        db = Database(path)
        try:
            size = path.stat().st_size
            _write_tasks(db, 0, 1500)  # ~1500 pages: stock SQLite checkpoints inside one of these commits
            assert path.stat().st_size == size, "a commit checkpointed the WAL on the committing thread"
        finally:
            db.close()

    trio.run(main)
    conn = sqlite3.connect(str(path))  # closing checkpointed the log: every task is in the file
    try:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1500
    finally:
        conn.close()


def test_the_running_database_checkpoints_in_another_thread_and_keeps_committing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    threads: set[int] = set()

    async def main() -> None:
        db = Database(path)
        run = db.checkpointer._checkpoint

        def spy() -> object:
            threads.add(threading.get_ident())
            return run()

        db.checkpointer._checkpoint = spy  # type: ignore[method-assign]
        size = path.stat().st_size
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.run)
            _write_tasks(db, 0, 1200)
            db.touch()
            with trio.fail_after(10):
                while db.checkpointer.done < 1:
                    await trio.sleep(0.05)
            assert path.stat().st_size > size  # the pages reached the database file
            size = path.stat().st_size
            _write_tasks(db, 1200, 50)  # commits go on while and after it runs
            db.touch()
            with trio.fail_after(10):  # each later burst of commits is checkpointed in turn (one a second at most)
                while path.stat().st_size <= size:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        db.close()

    trio.run(main)
    assert threads and threading.get_ident() not in threads
    conn = sqlite3.connect(str(path))
    try:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1250
    finally:
        conn.close()


def test_a_failing_checkpoint_is_logged_and_the_journal_goes_on(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j.sqlite3"

    async def main() -> None:
        db = Database(path)
        try:
            _write_tasks(db, 0, 10)
            db.checkpointer.path = tmp_path / "missing" / "j.sqlite3"  # its connection cannot open
            db.checkpointer._checkpoint()
            assert db.checkpointer.done == 0 and "WAL checkpoint" in caplog.text
            _write_tasks(db, 10, 10)
            assert TaskJournal(db).get(f"{15:032x}") is not None
        finally:
            db.close()

    with caplog.at_level(logging.WARNING, logger="p2p_fast.protocols.tasks.checkpoint"):
        trio.run(main)


def test_under_steady_commits_the_log_starts_over_instead_of_growing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    wal = Path(str(path) + "-wal")

    async def main() -> None:
        db = Database(path)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.run)
            _write_tasks(db, 0, 1200)  # ~3 frames a commit: past RESTART_FRAMES
            db.touch()
            with trio.fail_after(10):
                while db.checkpointer.finished < 1:  # the thread's pass, then the loop's between two commits
                    await trio.sleep(0.05)
            size = wal.stat().st_size
            _write_tasks(db, 1200, 300)  # fewer frames than the log holds: written over its start
            assert wal.stat().st_size == size
            nursery.cancel_scope.cancel()
        db.close()

    trio.run(main)


def test_a_database_at_rest_sets_no_timer_and_a_lazy_write_still_commits_within_a_second(tmp_path: Path) -> None:
    """An idle node's loop wakes for every timer; the commit loop had one every second with nothing to commit."""
    rounds: list[float] = []

    async def main() -> None:
        db = Database(tmp_path / "j.sqlite3")
        db.before_commit(lambda: rounds.append(trio.current_time()))  # runs on every pass of the commit loop
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.run)
            await trio.sleep(30)
            assert rounds == [], "the commit loop woke with nothing to commit"
            start = trio.current_time()
            TaskJournal(db)  # a lazy write: reputation-like, may wait up to a second
            db.conn.execute("INSERT INTO reputation (peer_id) VALUES ('p')")
            db.touch(lazy=True)
            await db.durable()
            assert 0 < trio.current_time() - start <= 1.0 and not db.dirty
            done = len(rounds)
            await trio.sleep(30)
            assert len(rounds) - done <= 1  # at most the pass that found the write committed, then rest again
            nursery.cancel_scope.cancel()
        db.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
