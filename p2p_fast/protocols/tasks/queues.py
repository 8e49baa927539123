"""Tasks waiting for a worker: one FIFO queue per capability, and a timer heap for retries that back off.

A queue is per capability (not per type): every task a worker with that capability can run waits in one line, so
a worker that frees a slot takes the oldest. A task retried after a backoff sits in ``delayed`` until its time,
then goes to the back of its queue; one retried at once (another worker may take it now) goes to the front.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque

import trio

from p2p_fast.protocols.tasks.journal import PENDING, TaskRecord


class TaskQueues:
    def __init__(self) -> None:
        self.queues: dict[str, deque[TaskRecord]] = {}
        self.delayed: list[tuple[float, int, TaskRecord]] = []
        self._seq = itertools.count()
        self.wakeup = trio.Event()  # set when a task was queued: the assign loop runs a round early

    def push(self, rec: TaskRecord, front: bool = False) -> None:
        rec.state = PENDING
        rec.waiting_since = time.monotonic()
        q = self.queues.get(rec.capability)
        if q is None:
            q = self.queues[rec.capability] = deque()
        if front:
            q.appendleft(rec)
        else:
            q.append(rec)
        self.wakeup.set()

    def delay(self, rec: TaskRecord, seconds: float) -> None:
        rec.state = PENDING
        rec.not_before = time.monotonic() + seconds
        heapq.heappush(self.delayed, (rec.not_before, next(self._seq), rec))
        self.wakeup.set()  # an idle assign loop waits long: back to short rounds until the task is due

    def due(self, now: float) -> list[TaskRecord]:
        """The delayed tasks whose time has come (taken off the timer heap)."""
        out = []
        while self.delayed and self.delayed[0][0] <= now:
            out.append(heapq.heappop(self.delayed)[2])
        return out

    def get(self, capability: str) -> deque[TaskRecord] | None:
        return self.queues.get(capability)

    def idle(self) -> bool:
        """No task waiting, queued or delayed."""
        return not self.delayed and not any(self.queues.values())

    def depth(self) -> int:
        return sum(len(q) for q in self.queues.values()) + len(self.delayed)

    async def wait(self, timeout: float) -> None:
        """Until a task is queued or ``timeout`` passed."""
        with trio.move_on_after(timeout):
            await self.wakeup.wait()
        self.wakeup = trio.Event()
