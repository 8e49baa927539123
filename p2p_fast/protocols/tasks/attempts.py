"""Running one attempt of a task on one worker, and noticing how it ended.

An attempt starts on a link (``start``) and ends in exactly one of these ways, each reported once to the owner
(the dispatcher) as an ``outcomes.Outcome``: the worker answered (``on_response``; ``outcomes.judge`` says what
the answer means), the stream to it broke (``link_broken``), or the watchdog gave up after ``2 x timeout + grace``
without an answer (``run_watchdog``; the worker is told to cancel). An answer to an attempt that is no longer
current (a retry started elsewhere, the task was cancelled) is counted as late and dropped.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

import trio

from p2p_fast.protocols.messages import TASK_OK, TaskCancel, TaskRequest, TaskResponse
from p2p_fast.protocols.tasks import metrics
from p2p_fast.protocols.tasks.journal import RUNNING, Attempt, TaskRecord
from p2p_fast.protocols.tasks.links import Link, LinkPool
from p2p_fast.protocols.tasks.outcomes import Action, Outcome, judge
from p2p_fast.protocols.tasks.types import TaskTypes

if TYPE_CHECKING:
    from p2p_fast.protocols.tasks.worker import Worker

log = logging.getLogger(__name__)
WATCHDOG_EVERY = 0.5
WATCHDOG_IDLE = 30.0  # with nothing in flight the watchdog sleeps this long, or until an attempt starts


class AttemptOwner(Protocol):
    """Who decides what happens to a task after one of its attempts ended."""

    def attempt_ended(self, rec: TaskRecord, link: Link, outcome: Outcome, resp: TaskResponse | None) -> None:
        """The current attempt of ``rec`` on ``link`` ended with ``outcome`` (``resp``: the answer, if any)."""

    def wake(self) -> None:
        """A worker has room again: run an assignment round soon."""


class LocalReplies:
    """How the node's own worker answers its attempts (``worker.Reply``): straight to the runner, in this process,
    so there is nothing to flush."""

    __slots__ = ("deliver",)

    def __init__(self, deliver: Callable[[TaskResponse], None]) -> None:
        self.deliver = deliver

    def __call__(self, resp: TaskResponse) -> None:
        self.deliver(resp)

    async def flush(self) -> None:
        return None


class AttemptRunner:
    def __init__(self, own_id: str, types: TaskTypes, active: Mapping[str, TaskRecord], worker: Worker,
                 local: Link, links: LinkPool, grace: float, max_payload_bytes: int,
                 emit: Callable[[TaskRecord, str], None], owner: AttemptOwner) -> None:
        self.own_id = own_id
        self.types = types
        self.active = active
        self.worker = worker
        self.local = local
        self.links = links
        self.grace = grace
        self.max_payload_bytes = max_payload_bytes
        self.emit = emit
        self.owner = owner
        self.local_active: dict[tuple[str, int], trio.CancelScope] = {}  # this node's own attempts, cancellable
        self.local_replies = LocalReplies(lambda resp: self.on_response(self.local, resp))
        self.nursery: trio.Nursery | None = None
        self._started = trio.Event()  # an attempt started: the idle watchdog wakes

    def heavy_type(self, type_name: str) -> bool:
        """Whether tasks of this type take a worker slot (not inline); unknown types are taken to."""
        t = self.types.get(type_name)
        return t is None or not t.inline

    def start(self, rec: TaskRecord, link: Link, heavy: bool) -> None:
        n = (rec.attempts[-1].n + 1) if rec.attempts else 1
        rec.attempts.append(Attempt(n, link.peer_id, time.time()))
        if rec.group is not None and rec.avoid is not None:
            rec.avoid.add(link.peer_id)  # no sibling replica may run there
        rec.state = RUNNING
        rec.worker = link.peer_id
        rec.deadline = time.monotonic() + 2 * rec.timeout_s + self.grace
        link.inflight[rec.id] = rec
        self._started.set()
        if heavy:
            link.heavy += 1
        else:
            link.light += 1
        metrics.ASSIGNED.labels(rec.type).inc()
        self.emit(rec, "assigned")
        req = TaskRequest(rec.id, rec.type, rec.payload, self.own_id, n, rec.reward, rec.timeout_s, rec.max_retries,
                          rec.created)
        if link.local:
            assert self.nursery is not None
            self.worker.execute(req, self.local_replies, self.local_active, self.nursery)
        else:
            self.links.send(link, req)

    def release(self, link: Link, rec: TaskRecord) -> bool:
        """Take ``rec`` off ``link``'s in-flight tasks (its window has room again)."""
        if link.inflight.pop(rec.id, None) is None:
            return False
        if self.heavy_type(rec.type):
            link.heavy -= 1
        else:
            link.light -= 1
        return True

    def _current(self, link: Link, resp: TaskResponse) -> TaskRecord | None:
        rec = self.active.get(resp.task_id)
        if (rec is None or rec.state != RUNNING or not rec.attempts or rec.attempts[-1].n != resp.attempt
                or rec.attempts[-1].worker != link.peer_id or resp.worker != link.peer_id):
            return None
        return rec

    def on_response(self, link: Link, resp: TaskResponse) -> None:
        rec = self._current(link, resp)
        if rec is None:
            metrics.LATE.inc()
            log.debug("ignored a response for %s attempt %d from %s (not current)", resp.task_id, resp.attempt,
                      link.peer_id)
            return
        if self.release(link, rec) and self.heavy_type(rec.type):
            link.window.observe(resp.elapsed_s, resp.window, resp.status == TASK_OK)
        self.owner.wake()
        t = self.types.get(rec.type)
        self.owner.attempt_ended(rec, link, judge(rec, resp, link.peer_id, t.verify if t is not None else None,
                                                  self.max_payload_bytes), resp)

    def link_broken(self, link: Link, reason: str, sent: bool) -> None:
        """Nothing in flight on ``link`` will be answered: ``sent``, it was lost (counted); else never delivered."""
        for rec in list(link.inflight.values()):
            self.release(link, rec)
            if rec.state != RUNNING or not rec.attempts or rec.attempts[-1].worker != link.peer_id:
                continue
            if sent:
                self.owner.attempt_ended(rec, link, Outcome(Action.RETRY, "disconnected", reason), None)
            else:
                self.owner.attempt_ended(rec, link, Outcome(Action.RETRY, "unreachable", reason, counted=False), None)
        self.owner.wake()

    async def run_watchdog(self) -> None:
        """Attempts whose worker neither answered nor disconnected in 2 x timeout + grace are given up on. With
        nothing in flight it sleeps until an attempt starts: an idle node's timers are a cost paid all the time."""
        inflight = 0
        while True:
            if inflight:
                await trio.sleep(WATCHDOG_EVERY)
            else:
                with trio.move_on_after(WATCHDOG_IDLE):
                    await self._started.wait()
                await trio.sleep(WATCHDOG_EVERY)
            self._started = trio.Event()
            now = time.monotonic()
            inflight = 0
            for link in [self.local, *self.links.links.values()]:
                inflight += len(link.inflight)
                for rec in [r for r in link.inflight.values() if r.deadline < now]:
                    self.release(link, rec)
                    if rec.state != RUNNING:
                        continue
                    self._cancel_remote(link, rec, rec.attempts[-1].n, "no answer in time")
                    why = f"no answer from the worker within {2 * rec.timeout_s + self.grace:g} s"
                    self.owner.attempt_ended(rec, link, Outcome(Action.RETRY, "timeout", why, note="timeout"), None)
            metrics.RUNNING.set(inflight)

    def withdraw(self, rec: TaskRecord, reason: str) -> None:
        """Stop ``rec``'s running attempt (the task was cancelled): off its link, and the worker told to cancel."""
        a = rec.attempts[-1]
        link = self.local if a.worker == self.own_id else self.links.get(a.worker)
        if link is not None:
            self.release(link, rec)
            self._cancel_remote(link, rec, a.n, reason)

    def _cancel_remote(self, link: Link, rec: TaskRecord, attempt: int, reason: str) -> None:
        if link.local:
            scope = self.local_active.get((rec.id, attempt))
            if scope is not None:
                scope.cancel()
        elif link.writable:
            assert link.writer is not None
            link.writer.send(TaskCancel(rec.id, attempt, reason))
