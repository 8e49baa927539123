"""The submitter's view of its tasks: the live ones, the recently finished, totals, waiters and task events.

The journal holds every task; this table keeps the live records (the dispatcher changes them in place) and the last
``RECENT_KEEP`` finished ones in memory, so that status queries and waiters do not touch SQLite. A waiter is woken
after the commit that made its task's final state durable.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import trio

from p2p_fast.protocols.tasks import metrics
from p2p_fast.protocols.tasks.journal import (CANCELLED, COMPLETED, FAILED, FINAL_STATES, RUNNING, Database,
                                              TaskJournal, TaskRecord)
from p2p_fast.protocols.tasks.ports import EventSink

RECENT_KEEP = 20000


class TaskTable:
    def __init__(self, journal: TaskJournal, db: Database, bus: EventSink | None) -> None:
        self.journal = journal
        self.db = db
        self.bus = bus
        self.active: dict[str, TaskRecord] = {}
        self.recent: OrderedDict[str, TaskRecord] = OrderedDict()
        self.waiters: dict[str, trio.Event] = {}
        self.totals: dict[str, int] = {s: 0 for s in (COMPLETED, FAILED, CANCELLED)}
        self.totals.update({k: v for k, v in journal.state_counts().items() if k in self.totals})
        self.retried = 0

    def emit(self, rec: TaskRecord, what: str) -> None:
        """One ``task`` event on the node's event bus (``GET /v1/events``) for a transition of ``rec``."""
        bus = self.bus
        if bus is None:
            return
        if not bus.recording:  # nobody watching: no event to build
            bus.skip()
            return
        a = rec.attempts[-1] if rec.attempts else None
        bus.emit("task", {"id": rec.id, "type": rec.type, "event": what, "state": rec.state,
                          "worker": a.worker if a is not None else rec.worker, "attempt": a.n if a is not None else 0,
                          "error": (a.reason or None) if what == "retry" and a is not None else rec.error,
                          "ts": time.time(), "created": rec.created},
                 rec.result if what == "completed" else None)

    def finished(self, rec: TaskRecord) -> None:
        """``rec`` reached its final state: its event, then journal it, count it, tell its waiter after the commit.
        The event goes first: a client on the task lane has its result while the row is written (the event never
        waited for the commit; a crash before it re-runs the task, as for any task not journaled as finished)."""
        self.active.pop(rec.id, None)
        self.recent[rec.id] = rec
        while len(self.recent) > RECENT_KEEP:
            self.recent.popitem(last=False)
        self.emit(rec, rec.state)
        self.journal.finish(rec)
        self.totals[rec.state] = self.totals.get(rec.state, 0) + 1
        if rec.state == COMPLETED:
            metrics.COMPLETED.labels(rec.type).inc()
        elif rec.state == FAILED:
            metrics.FAILED.labels(rec.type).inc()
        metrics.LATENCY.observe(max(0.0, rec.finished - rec.created) if rec.finished else 0.0)
        event = self.waiters.pop(rec.id, None)
        if event is not None:
            self.db.after_commit(event.set)

    def get(self, task_id: str) -> TaskRecord | None:
        rec = self.active.get(task_id) or self.recent.get(task_id)
        if rec is None:
            rec = self.journal.get(task_id)
        return rec

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord | None:
        rec = self.get(task_id)
        if rec is None or rec.state in FINAL_STATES:
            return rec
        event = self.waiters.get(task_id)
        if event is None:
            event = self.waiters[task_id] = trio.Event()
        if timeout is None:
            await event.wait()
        else:
            with trio.move_on_after(timeout):
                await event.wait()
        return self.get(task_id)

    def counts(self) -> dict[str, int]:
        tasks = [r for r in self.active.values() if r.group is None]  # not the replicas of redundant tasks
        running = sum(1 for r in tasks if r.state == RUNNING)
        return {
            "pending": len(tasks) - running,
            "running": running,
            "completed": self.totals.get(COMPLETED, 0),
            "failed": self.totals.get(FAILED, 0),
            "cancelled": self.totals.get(CANCELLED, 0),
            "retried": self.retried,
        }
