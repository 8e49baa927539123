"""The submitter side of the task protocol: queue, assign, watch, retry, verify, pay.

Any node accepts tasks. Each task waits in a per-capability queue until a capable worker has room; the worker is the
cheapest by (our tasks in flight there, its advertised free slots and load, RTT, reputation). One attempt runs at a
time: a new attempt starts only after the previous one ended (answer, timeout, disconnect), on another worker when
there is one, after an exponential backoff. A task fails for good when ``max_retries`` retries are used up (every
attempt's reason is in the error), when its payload is invalid, or when no capable worker shows up within
``tasks.assign_timeout``. Results from an attempt that is no longer current are ignored, and the ledger's primary
key pays every task at most once.

Each worker gets one long-lived stream (``links.Link``), opened on first use and reused; requests are pipelined on
it and batched into few writes. The node itself is a worker for the capabilities it has (a local link, no stream).

This module ties the parts together; each part stands alone: ``spec`` (what a submission is), ``scheduler`` (where
a task goes: pure), ``retries`` (when it is tried again: pure), ``links`` (streams to workers), ``receipts``
(paying workers), ``finder`` (who can run a capability: peer book and DHT) and ``table`` (live and recent tasks).

Incentives hook in narrowly: a task with ``redundancy`` > 1 runs as replicas decided by ``redundancy.py``; a worker
that answers ``busy: credit`` (``credit.py``) is avoided for that task; workers excluded by ``reputation.py`` are not
candidates; a result the type's verifier calls wrong counts against the worker's reputation.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

import trio

from p2p_fast.protocols.messages import TaskResponse
from p2p_fast.protocols.tasks import metrics, scheduler
from p2p_fast.protocols.tasks.attempts import AttemptRunner
from p2p_fast.protocols.tasks.finder import WorkerFinder
from p2p_fast.protocols.tasks.journal import (CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, Database, StorageError,
                                              TaskJournal, TaskRecord)
from p2p_fast.protocols.tasks.ledger import Ledger
from p2p_fast.protocols.tasks.links import Link, LinkPool
from p2p_fast.protocols.tasks.outcomes import Action, Outcome
from p2p_fast.protocols.tasks.ports import TaskEnv
from p2p_fast.protocols.tasks.queues import TaskQueues
from p2p_fast.protocols.tasks.receipts import Receipts
from p2p_fast.protocols.tasks.redundancy import Redundancy
from p2p_fast.protocols.tasks.retries import attempt_summary, end_attempt, excluded_workers, retry_delay
from p2p_fast.protocols.tasks.scheduler import Candidate, LocalOffer, Verdict
from p2p_fast.protocols.tasks.spec import StorageUnavailable, TaskSpec, check_spec
from p2p_fast.protocols.tasks.table import TaskTable
from p2p_fast.protocols.tasks.types import TaskTypes
from p2p_fast.protocols.tasks.wire import FRAME_OVERHEAD, RECEIPT_BATCH_VERSION, FrameWriter, protocol_version

if TYPE_CHECKING:
    from p2p_fast.protocols.tasks.worker import Worker

log = logging.getLogger(__name__)
TICK = 0.25
IDLE_TICK = 5.0  # the assignment round's period with no task queued or delayed (a queued task wakes it at once)
BUSY_PENALTY = 0.25
MAX_CANDIDATES = 64  # live workers weighed per assignment round: a sample of a large network (presence doc)
ID_LEN = 32
MAX_SKIPPED = 1000  # tasks set aside in one round (they fit nowhere now) before the round ends
GROUP_COMMIT_S = 0.002  # responses read this soon after a commit wait for the next scheduler round's commit


class Dispatcher:
    def __init__(self, env: TaskEnv, types: TaskTypes, db: Database, journal: TaskJournal, ledger: Ledger,
                 worker: Worker) -> None:
        host = env.host
        self.cfg = env.tasks
        self.types = types
        self.db = db
        self.journal = journal
        self.ledger = ledger
        ledger.on_change(self.wake)  # an idle assign loop writes them soon
        self.worker = worker
        self.own_id = str(host.get_id())
        self.capabilities = env.capabilities
        self.book = env.book
        self.rtt = env.rtt
        self.grace = max(5.0, env.connection_timeout)
        self.connection_timeout = env.connection_timeout
        self.table = TaskTable(journal, db, env.events)
        self.active = self.table.active
        self.queues = TaskQueues()
        self.local = Link(self.own_id, local=True)
        self.finder = WorkerFinder(self.own_id, env.capabilities, env.book, env.dht, host.get_peerstore(),
                                   env.protocol_version, types, self.wake)
        batch_protocol = protocol_version(env.task_protocol, RECEIPT_BATCH_VERSION) if self.cfg.receipt_batches \
            else None
        self.link_pool = LinkPool(host, env.task_protocol, self.cfg.max_payload_bytes + FRAME_OVERHEAD,
                                  self.connection_timeout, self.finder.addrs_of, self, batch_protocol)
        self.links = self.link_pool.links
        self.attempts = AttemptRunner(self.own_id, types, self.active, worker, self.local, self.link_pool, self.grace,
                                      self.cfg.max_payload_bytes, self.table.emit, self)
        self.receipts = Receipts(self.own_id, host.get_private_key(), host.get_public_key().serialize(), ledger, db,
                                 self.link_pool, self.local, lambda r: worker.on_receipt(r, None), self._is_live)
        self._nursery: trio.Nursery | None = None
        self.redundancy = Redundancy(self, self.cfg)

    def _is_live(self, peer_id: str) -> bool:
        rec = self.book.get(peer_id)
        return rec is not None and self.book.is_live(rec)

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.link_pool.nursery = nursery
        self.attempts.nursery = nursery
        self._resume()
        nursery.start_soon(self._assign_loop)
        nursery.start_soon(self.attempts.run_watchdog)
        nursery.start_soon(self.receipts.run_sender)
        nursery.start_soon(self.receipts.run_redeliver)

    def _resume(self) -> None:
        """Pick up the tasks a previous run of this node accepted but did not finish."""
        now = time.time()
        resumed = 0
        for rec in self.journal.unfinished():
            for a in rec.attempts:
                if a.outcome == "running":
                    a.outcome, a.reason, a.ended, a.counted = "interrupted", "submitter restarted", now, False
            rec.state = PENDING
            self.journal.save_attempts(rec)
            self.active[rec.id] = rec
            self.enqueue(rec)
            resumed += 1
        if resumed:
            log.info("resumed %d unfinished task(s) from the journal", resumed)

    def wake(self) -> None:
        self.queues.wakeup.set()

    # -- submission -------------------------------------------------------------------------------------------------
    async def submit_many(self, specs: list[TaskSpec]) -> list[str]:
        for spec in specs:
            check_spec(spec, self.cfg.max_payload_bytes)
        for type_name in sorted({s.type for s in specs}):
            await self.finder.ensure_known(type_name)
        now = time.time()
        cfg = self.cfg
        records = [TaskRecord(
            id=secrets.token_hex(ID_LEN // 2), type=s.type, capability=self.types.capability_for(s.type),
            payload=bytes(s.payload), reward=cfg.default_reward if s.reward is None else s.reward,
            timeout_s=cfg.default_timeout if s.timeout_s is None else float(s.timeout_s),
            max_retries=cfg.max_retries if s.max_retries is None else s.max_retries, created=now, updated=now,
            redundancy=self.redundancy.choose(s.type, not self.attempts.heavy_type(s.type), s.redundancy))
            for s in specs]
        try:
            # Accepted means journaled (WAL, no fsync: ~0.1 ms, cheaper than a scheduler hop). Written alone: a full
            # disk refuses this submission only (507), and loses nothing else.
            self.db.write_alone(lambda: self.journal.insert_many(records))
        except StorageError as exc:
            raise StorageUnavailable(f"tasks not accepted: {exc}") from None
        for rec in records:
            self.active[rec.id] = rec
            self.enqueue(rec)
            metrics.SUBMITTED.labels(rec.type).inc()
            self.table.emit(rec, "submitted")
        for cap in {r.capability for r in records}:  # assign right away: saves a scheduler round per task
            q = self.queues.get(cap)
            if q:
                self._assign(cap, q)
        await self.link_pool.flush()  # and send: the links' writer tasks would run after every other task's step
        return [r.id for r in records]

    # -- queues -----------------------------------------------------------------------------------------------------
    def enqueue(self, rec: TaskRecord, front: bool = False) -> None:
        if rec.redundancy > 1 and rec.group is None:
            self.redundancy.start(rec)  # runs as replicas, each enqueued on its own
            return
        self.queues.push(rec, front)

    def queue_depth(self) -> int:
        return self.queues.depth()

    async def _assign_loop(self) -> None:
        while True:
            # Nothing to assign and no counters to write: long rounds (a queued task wakes the loop at once).
            idle = self.queues.idle() and not self.ledger.pending()
            await self.queues.wait(IDLE_TICK if idle else TICK)
            for rec in self.queues.due(time.monotonic()):
                if rec.state == PENDING and rec.id in self.active:
                    self.enqueue(rec)
            for cap, q in self.queues.queues.items():
                if q:
                    self._assign(cap, q)
            metrics.QUEUE_DEPTH.set(self.queue_depth())
            self.ledger.flush_reputation()
            # Let the links write and the responses come in before the next round.
            await trio.lowlevel.checkpoint()

    def _candidates(self, cap: str) -> list[Candidate]:
        rtts = self.rtt.rtt if self.rtt is not None else {}
        local_offer = None
        if cap in self.capabilities():
            local_offer = LocalOffer(self.cfg.slots, self.worker.running, self.worker.load()[3])
        return scheduler.gather(
            local=self.local, local_offer=local_offer,
            peers=self.book.with_capability(cap, limit=MAX_CANDIDATES), providers=self.finder.providers(cap),
            rtt={str(k): v for k, v in rtts.items()} if rtts else {}, score=self.ledger.score,
            banned=self.ledger.banned, link_for=self.link_pool.link_for, now=time.monotonic())

    def capable_peers(self, cap: str) -> set[str]:
        """Every peer that could run ``cap`` now (cooling down or not), without those excluded for wrong results."""
        return self.finder.capable_peers(cap, self.ledger.banned)

    def _assign(self, cap: str, q: deque[TaskRecord]) -> None:
        cands = self._candidates(cap)
        if not cands:
            self._no_worker(cap, q)
            return
        skipped: list[TaskRecord] = []
        started: set[str] = set()
        while q:
            rec = q[0]
            if rec.state != PENDING or rec.id not in self.active:
                q.popleft()
                continue
            if rec.id in started:
                # Started in this pass and already back at the head (a local worker answered "busy" without a
                # scheduler hop): stop here, the assign loop retries after yielding; looping would spin forever.
                break
            heavy = self.attempts.heavy_type(rec.type)
            excluded = excluded_workers(rec.attempts) if rec.attempts else ()
            choice = scheduler.choose(cands, heavy, excluded, rec.avoid or ())
            if choice.verdict is Verdict.NO_USABLE:
                q.popleft()  # no worker it may use: wait for one (a bounded time), let the others go ahead
                if time.monotonic() - rec.waiting_since > self.cfg.assign_timeout:
                    self.fail(rec, f"no live worker with capability {cap!r} that this task may use within "
                                    f"{self.cfg.assign_timeout:g} s" + attempt_summary(rec, prefix="; "))
                else:
                    skipped.append(rec)
                    if len(skipped) > MAX_SKIPPED:
                        break
                continue
            if choice.verdict is Verdict.SKIP:
                skipped.append(q.popleft())  # another task may fit where this one may not go
                if len(skipped) > MAX_SKIPPED:
                    break
                continue
            if choice.verdict is Verdict.FULL:
                break  # every worker is full
            assert choice.candidate is not None
            q.popleft()
            started.add(rec.id)
            self.attempts.start(rec, choice.candidate.link, heavy)
        q.extendleft(reversed(skipped))

    def _no_worker(self, cap: str, q: deque[TaskRecord]) -> None:
        now = time.monotonic()
        self.finder.lookup_soon(cap, self._nursery, self.connection_timeout)
        limit = self.cfg.assign_timeout
        while q and (q[0].state != PENDING or now - q[0].waiting_since > limit):
            rec = q.popleft()
            if rec.state != PENDING or rec.id not in self.active:
                continue
            self.fail(rec, f"no live worker with capability {cap!r} within {limit:g} s"
                       + attempt_summary(rec, prefix="; "))

    # -- what the links report (links.LinkEvents) --------------------------------------------------------------------
    def link_opened(self, link: Link, writer: FrameWriter) -> None:
        self.receipts.send_owed(link, writer)

    def on_response(self, link: Link, resp: TaskResponse) -> None:
        self.attempts.on_response(link, resp)

    def responses_read(self) -> None:
        """Commit what the read finished; waiters and receipts follow right after the commit. When the last commit
        was a moment ago (a busy submitter), the database's own task commits instead, when it next runs: after the
        other links' reads of this scheduler round, one commit for them all (a commit per read was a sixth of a busy
        submitter's CPU). When it was not, at once: a lone task's answer waits for no scheduler round."""
        if time.monotonic() - self.db.committed_at < GROUP_COMMIT_S:
            self.db.touch()
        else:
            self.db.commit_now()

    def link_closed(self, link: Link) -> None:
        self.receipts.stream_lost(link)

    def link_broken(self, link: Link, reason: str, sent: bool) -> None:
        self.attempts.link_broken(link, reason, sent)

    # -- how attempts end (attempts.AttemptOwner) -------------------------------------------------------------------
    def attempt_ended(self, rec: TaskRecord, link: Link, o: Outcome, resp: TaskResponse | None) -> None:
        if o.note is not None:
            self.ledger.note(link.peer_id, o.note)
            if o.note == "wrong":
                metrics.WRONG.labels("verifier").inc()
        if o.action is Action.COMPLETE:
            assert resp is not None
            self._completed(rec, link.peer_id, resp.attempt, resp.result, o.digest)
        elif o.action is Action.AVOID:
            self._refused_for_credit(rec, link, o.reason)
        elif o.action is Action.REQUEUE:
            rec.attempts.pop()  # not an attempt: the worker never started it
            link.window.busy(link.heavy)
            link.cool_down(time.monotonic() + BUSY_PENALTY)
            self.enqueue(rec, front=True)
        elif o.action is Action.FAIL:
            self._end_attempt(rec, o.outcome, o.reason)
            self.fail(rec, o.error)
        else:
            self._attempt_failed(rec, o.outcome, o.reason, counted=o.counted, backoff=o.backoff)

    def _completed(self, rec: TaskRecord, worker: str, attempt: int, result: bytes, digest: str) -> None:
        self._end_attempt(rec, "ok", "")
        rec.state = COMPLETED
        rec.result = result
        rec.worker = worker
        rec.error = None
        rec.finished = time.time()
        if rec.group is None:  # a replica is paid only if the majority agrees with it (redundancy.py)
            self.pay(rec, worker, attempt, digest)
        self.finalize(rec)

    def pay(self, rec: TaskRecord, worker: str, attempt: int, digest: str) -> None:
        self.receipts.pay(rec, worker, attempt, digest)

    def _refused_for_credit(self, rec: TaskRecord, link: Link, error: str) -> None:
        """The worker will not serve us until we work for it (credit.py): try the others; fail when all refused."""
        self._end_attempt(rec, "refused", error, counted=False)
        if rec.avoid is None:
            rec.avoid = set()
        rec.avoid.add(link.peer_id)
        if not self.capable_peers(rec.capability) - rec.avoid:
            self.fail(rec, f"every capable worker refused it: {error}")
            return
        self.journal.save_attempts(rec)
        self.enqueue(rec, front=True)

    def _end_attempt(self, rec: TaskRecord, outcome: str, reason: str, counted: bool = True) -> None:
        end_attempt(rec, time.time(), outcome, reason, counted)

    def _attempt_failed(self, rec: TaskRecord, outcome: str, reason: str, counted: bool = True,
                        backoff: bool = True) -> None:
        self._end_attempt(rec, outcome, reason, counted)
        if counted and rec.counted_attempts > rec.max_retries:
            self.fail(rec, f"failed after {rec.counted_attempts} attempt(s)" + attempt_summary(rec, ": "))
            return
        if counted:
            self.table.retried += 1
            metrics.RETRIED.labels(rec.type, outcome).inc()
        log.info("task %s attempt %d on %s: %s (%s); %s", rec.id, rec.attempts[-1].n, rec.attempts[-1].worker,
                 outcome, reason, "retrying")
        self.journal.save_attempts(rec)
        rec.state = PENDING
        self.table.emit(rec, "retry")
        delay = retry_delay(rec.counted_attempts, self.cfg.retry_backoff, counted=counted, backoff=backoff,
                            uniform=random.uniform)
        if delay > 0:
            self.queues.delay(rec, delay)
        else:
            self.enqueue(rec, front=True)

    def fail(self, rec: TaskRecord, error: str) -> None:
        rec.state = FAILED
        rec.error = error
        rec.result = None
        rec.finished = time.time()
        log.warning("task %s (%s) failed: %s", rec.id, rec.type, error)
        self.finalize(rec)

    def finalize(self, rec: TaskRecord) -> None:
        if rec.group is not None:  # a replica: its redundant task decides (redundancy.py)
            self.active.pop(rec.id, None)
            self.redundancy.replica_final(rec)
            return
        self.table.finished(rec)

    # -- cancellation -----------------------------------------------------------------------------------------------
    def cancel(self, task_id: str) -> TaskRecord | None:
        rec = self.active.get(task_id)
        if rec is None:
            return None
        self.redundancy.cancel(task_id)
        if rec.state == RUNNING and rec.attempts:
            self.attempts.withdraw(rec, "cancelled by the user")
            self._end_attempt(rec, "cancelled", "cancelled by the user")
        rec.state = CANCELLED
        rec.error = "cancelled by the user"
        rec.finished = time.time()
        self.finalize(rec)
        return rec

    # -- views ------------------------------------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        return self.table.get(task_id)

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord | None:
        return await self.table.wait(task_id, timeout)

    def counts(self) -> dict[str, int]:
        return self.table.counts()
