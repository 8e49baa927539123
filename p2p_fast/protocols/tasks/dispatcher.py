"""The submitter side of the task protocol: queue, assign, watch, retry, verify, pay.

Any node accepts tasks. Each task waits in a per-capability queue until a capable worker has room; the worker is the
cheapest by (our tasks in flight there, its advertised free slots and load, RTT, reputation). One attempt runs at a
time: a new attempt starts only after the previous one ended (answer, timeout, disconnect), on another worker when
there is one, after an exponential backoff. A task fails for good when ``max_retries`` retries are used up (every
attempt's reason is in the error), when its payload is invalid, or when no capable worker shows up within
``tasks.assign_timeout``. Results from an attempt that is no longer current are ignored, and the ledger's primary
key pays every task at most once.

Each worker gets one long-lived stream (``Link``), opened on first use and reused; requests are pipelined on it
and batched into few writes. The node itself is a worker for the capabilities it has (a local link, no stream).

Incentives hook in narrowly: a task with ``redundancy`` > 1 runs as replicas decided by ``redundancy.py``; a worker
that answers ``busy: credit`` (``credit.py``) is avoided for that task; workers excluded by ``reputation.py`` are not
candidates; a result the type's verifier calls wrong counts against the worker's reputation.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.protocols.messages import (TASK_BUSY, TASK_CANCELLED, TASK_FAILED, TASK_INVALID, TASK_OK, TASK_REJECTED,
                                 TASK_TIMED_OUT, TaskCancel, TaskReceipt, TaskRequest, TaskResponse)
from p2p_fast.protocols.tasks import metrics
from p2p_fast.protocols.tasks.credit import CREDIT_REFUSAL
from p2p_fast.protocols.tasks.journal import (CANCELLED, COMPLETED, FAILED, FINAL_STATES, PENDING, RUNNING, Attempt, Database, StorageError,
                      TaskJournal, TaskRecord)
from p2p_fast.protocols.tasks.ledger import RESEND_WINDOW_S, Ledger, result_digest, sign_receipt
from p2p_fast.protocols.tasks.redundancy import Redundancy
from p2p_fast.protocols.tasks.types import TYPE_NAME_RE, TaskTypes
from p2p_fast.protocols.tasks.window import LinkWindow
from p2p_fast.protocols.tasks.wire import FRAME_OVERHEAD, FrameError, FrameReader, FrameWriter, StreamClosed

log = logging.getLogger(__name__)
LIGHT_WINDOW = 512  # in-flight inline tasks (echo, storage) per worker
LIGHT_SOFT = 64  # ... where the cost of one more starts to weigh like a busy slot
TICK = 0.25
MAX_BACKOFF = 10.0
# A stream over a connection that is up opens in one round trip plus multistream; one that takes longer than this is
# riding a dead connection (a peer that froze, or closed its side while a partition ate the FIN).
STREAM_OPEN_TIMEOUT = 10.0
BUSY_PENALTY = 0.25
RECENT_KEEP = 20000
LOOKUP_EVERY = 10.0
MAX_CANDIDATES = 64  # live workers weighed per assignment round: a sample of a large network (presence doc)
ID_LEN = 32
RECEIPT_BATCH_S = 0.02
RECEIPT_BATCH_MAX = 256
REDELIVER_EVERY = 5.0  # how often receipts still owed to live workers get a stream of their own


class TaskSpecError(ValueError):
    """A submission that cannot be accepted; ``status`` is the HTTP code that says why."""

    status = 422


class UnknownTaskType(TaskSpecError):
    status = 400


class PayloadTooLarge(TaskSpecError):
    status = 413


class StorageUnavailable(TaskSpecError):
    """The journal could not take the submission (data dir full): nothing was accepted."""

    status = 507


@dataclass
class TaskSpec:
    type: str
    payload: bytes
    timeout_s: float | None = None
    max_retries: int | None = None
    reward: int | None = None
    redundancy: int | None = None  # distinct workers that must agree on the result (redundancy.py)


class Link:
    """The submitter's connection to one worker (``local``: this node itself)."""

    def __init__(self, peer_id: str, local: bool = False) -> None:
        self.peer_id = peer_id
        self.local = local
        self.inflight: dict[str, TaskRecord] = {}
        self.heavy = 0
        self.light = 0
        self.state = "open" if local else "closed"  # closed, opening, open
        self.writer: FrameWriter | None = None
        self.outbox: list[Any] = []
        self.open_failures = 0
        self.cooldown_until = 0.0
        self.scope: trio.CancelScope | None = None
        self.generation = 0
        self.receipts_sent: deque[tuple[float, str]] = deque()  # (when, task id) on the current stream
        self.window = LinkWindow()  # how many slot-taking tasks may be in flight there (window.py)


@dataclass
class Candidate:
    link: Link
    heavy_window: int
    static_cost: float


class Dispatcher:
    def __init__(self, node: Any, types: TaskTypes, db: Database, journal: TaskJournal, ledger: Ledger,
                 worker: Any) -> None:
        self.node = node
        self.cfg = node.cfg.tasks
        self.types = types
        self.db = db
        self.journal = journal
        self.ledger = ledger
        self.worker = worker
        self.own_id = str(node.peer_id)
        self.key = node.host.get_private_key()
        self.own_key_bytes = node.host.get_public_key().serialize()
        self.protocol = node.cfg.protocol_id("task")
        self.max_frame = self.cfg.max_payload_bytes + FRAME_OVERHEAD
        self.grace = max(5.0, node.cfg.network.connection_timeout)
        self.active: dict[str, TaskRecord] = {}
        self.recent: OrderedDict[str, TaskRecord] = OrderedDict()
        self.events: dict[str, trio.Event] = {}
        self.queues: dict[str, deque[TaskRecord]] = {}
        self.delayed: list[tuple[float, int, TaskRecord]] = []
        self.links: dict[str, Link] = {}
        self.local = Link(self.own_id, local=True)
        self.local_active: dict[tuple[str, int], trio.CancelScope] = {}
        self.dht_found: dict[str, dict[str, PeerInfo]] = {}
        self.dht_looked: dict[str, float] = {}
        self.totals: dict[str, int] = {s: 0 for s in (COMPLETED, FAILED, CANCELLED)}
        self.totals.update({k: v for k, v in journal.state_counts().items() if k in self.totals})
        self.retried = 0
        self._seq = itertools.count()
        self._wake = trio.Event()
        self.receipts: list[tuple[Link, TaskReceipt]] = []
        self._receipts_wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.redundancy = Redundancy(self)
        self._bus = getattr(node, "events", None)

    def _event(self, rec: TaskRecord, what: str) -> None:
        """One ``task`` event on the node's event bus (``GET /v1/events``) for a transition of ``rec``."""
        bus = self._bus
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

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._resume()
        nursery.start_soon(self._assign_loop)
        nursery.start_soon(self._watchdog)
        nursery.start_soon(self._receipt_sender)
        nursery.start_soon(self._redeliver_loop)

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
            self._enqueue(rec)
            resumed += 1
        if resumed:
            log.info("resumed %d unfinished task(s) from the journal", resumed)

    def wake(self) -> None:
        self._wake.set()

    # -- submission -------------------------------------------------------------------------------------------------
    def _check_spec(self, spec: TaskSpec) -> None:
        if not isinstance(spec.type, str) or not TYPE_NAME_RE.match(spec.type):
            raise TaskSpecError(f"task type {spec.type!r} is not a type name (lowercase letters, digits, _ . -; "
                                "up to 64)")
        if len(spec.payload) > self.cfg.max_payload_bytes:
            raise PayloadTooLarge(f"payload of {len(spec.payload)} bytes is over tasks.max_payload_bytes "
                                  f"({self.cfg.max_payload_bytes})")
        if spec.timeout_s is not None and not 0 < spec.timeout_s <= 86400:
            raise TaskSpecError("timeout_s must be within (0, 86400]")
        if spec.max_retries is not None and not 0 <= spec.max_retries <= 100:
            raise TaskSpecError("max_retries must be within 0..100")
        if spec.reward is not None and not 0 <= spec.reward <= 10**12:
            raise TaskSpecError("reward must be within 0..10^12")
        problem = Redundancy.check(spec.type, spec.redundancy)
        if problem:
            raise TaskSpecError(problem)

    def _capability_seen(self, capability: str) -> bool:
        if capability in self.node.capabilities:
            return True
        if self.node.book.with_capability(capability):
            return True
        return bool(self.dht_found.get(capability))

    async def _ensure_known(self, type_name: str) -> None:
        """Fail fast on a type nobody can run: not ours, not advertised, not in the DHT."""
        if type_name == "function":
            await self._ensure_function_workers()
            return
        if self.types.get(type_name) is not None:
            return
        cap = self.types.capability_for(type_name)
        if self._capability_seen(cap):
            return
        await self._lookup(cap, timeout=1.5)
        if self._capability_seen(cap):
            return
        builtin = ", ".join(sorted(n for n, t in self.types.types.items() if t.builtin))
        raise UnknownTaskType(f"unknown task type {type_name!r}: not a built-in type ({builtin}), not installed "
                              f"on this node, and no live worker advertises the capability {cap!r}")

    async def _ensure_function_workers(self) -> None:
        """Python functions run only where a worker opted in (it advertises ``functions``): none live, say so now."""
        if self._capability_seen("functions"):
            return
        await self._lookup("functions", timeout=1.5)
        if not self._capability_seen("functions"):
            raise UnknownTaskType("no live worker runs Python functions: none advertises the capability 'functions' "
                                  "(workers opt in with tasks.accept_functions: true)")

    async def submit_many(self, specs: list[TaskSpec]) -> list[str]:
        for spec in specs:
            self._check_spec(spec)
        for type_name in sorted({s.type for s in specs}):
            await self._ensure_known(type_name)
        now = time.time()
        cfg = self.cfg
        records = [TaskRecord(
            id=secrets.token_hex(ID_LEN // 2), type=s.type, capability=self.types.capability_for(s.type),
            payload=bytes(s.payload), reward=cfg.default_reward if s.reward is None else s.reward,
            timeout_s=cfg.default_timeout if s.timeout_s is None else float(s.timeout_s),
            max_retries=cfg.max_retries if s.max_retries is None else s.max_retries, created=now, updated=now,
            redundancy=self.redundancy.choose(s.type, not self._heavy_type(s.type), s.redundancy))
            for s in specs]
        try:
            # Accepted means journaled (WAL, no fsync: ~0.1 ms, cheaper than a scheduler hop). Written alone: a full
            # disk refuses this submission only (507), and loses nothing else.
            self.db.write_alone(lambda: self.journal.insert_many(records))
        except StorageError as exc:
            raise StorageUnavailable(f"tasks not accepted: {exc}") from None
        for rec in records:
            self.active[rec.id] = rec
            self._enqueue(rec)
            metrics.SUBMITTED.labels(rec.type).inc()
            self._event(rec, "submitted")
        for cap in {r.capability for r in records}:  # assign right away: saves a scheduler round per task
            q = self.queues.get(cap)
            if q:
                self._assign(cap, q)
        return [r.id for r in records]

    # -- queues -----------------------------------------------------------------------------------------------------
    def _enqueue(self, rec: TaskRecord, front: bool = False) -> None:
        if rec.redundancy > 1 and rec.group is None:
            self.redundancy.start(rec)  # runs as replicas, each enqueued on its own
            return
        rec.state = PENDING
        rec.waiting_since = time.monotonic()
        q = self.queues.get(rec.capability)
        if q is None:
            q = self.queues[rec.capability] = deque()
        if front:
            q.appendleft(rec)
        else:
            q.append(rec)
        self._wake.set()

    def _delay(self, rec: TaskRecord, delay: float) -> None:
        rec.state = PENDING
        rec.not_before = time.monotonic() + delay
        heapq.heappush(self.delayed, (rec.not_before, next(self._seq), rec))

    def queue_depth(self) -> int:
        return sum(len(q) for q in self.queues.values()) + len(self.delayed)

    async def _assign_loop(self) -> None:
        while True:
            with trio.move_on_after(TICK):
                await self._wake.wait()
            self._wake = trio.Event()
            now = time.monotonic()
            while self.delayed and self.delayed[0][0] <= now:
                _, _, rec = heapq.heappop(self.delayed)
                if rec.state == PENDING and rec.id in self.active:
                    self._enqueue(rec)
            for cap, q in self.queues.items():
                if q:
                    self._assign(cap, q)
            metrics.QUEUE_DEPTH.set(self.queue_depth())
            self.ledger.flush_reputation()
            # Let the links write and the responses come in before the next round.
            await trio.lowlevel.checkpoint()

    def _candidates(self, cap: str) -> list[Candidate]:
        out: list[Candidate] = []
        now = time.monotonic()
        health = getattr(self.node, "health", None)
        rtts: dict[Any, float] = health.rtt if health is not None else {}
        rtt_by_str = {str(k): v for k, v in rtts.items()} if rtts else {}
        seen: set[str] = set()
        if cap in self.node.capabilities:
            slots = self.cfg.slots
            free = max(0, slots - self.worker.running)
            static = 0.3 * (1 - free / slots if slots else 0) + 0.3 * min(self.worker.load()[3], 2.0)
            out.append(Candidate(self.local, slots, static))
            seen.add(self.own_id)
        for rec in self.node.book.with_capability(cap, limit=MAX_CANDIDATES):
            if rec.peer_id in seen or self.ledger.banned(rec.peer_id):
                continue
            seen.add(rec.peer_id)
            link = self.links.get(rec.peer_id)
            if link is None:
                link = self.links[rec.peer_id] = Link(rec.peer_id)
            if link.cooldown_until > now:
                continue
            slots = rec.slots
            busy = 1 - rec.free_slots / slots if slots else 0.0
            rtt = rtt_by_str.get(rec.peer_id, 0.005)
            static = (0.3 * busy + 0.3 * min(max(rec.load, 0.0), 2.0) + min(rtt * 10, 1.0)
                      + (1 - self.ledger.score(rec.peer_id)))
            out.append(Candidate(link, slots, static))
        for pid, info in self.dht_found.get(cap, {}).items():
            if pid in seen or self.ledger.banned(pid):
                continue
            link = self.links.get(pid)
            if link is None:
                link = self.links[pid] = Link(pid)
            if link.cooldown_until > now:
                continue
            out.append(Candidate(link, 1, 1.0 + (1 - self.ledger.score(pid))))
        return out

    def _capable_peers(self, cap: str) -> set[str]:
        """Every peer that could run ``cap`` now (cooling down or not), without those excluded for wrong results."""
        peers = {self.own_id} if cap in self.node.capabilities else set()
        peers.update(r.peer_id for r in self.node.book.with_capability(cap))
        peers.update(self.dht_found.get(cap, {}))
        return {p for p in peers if p == self.own_id or not self.ledger.banned(p)}

    def _heavy(self, rec: TaskRecord) -> bool:
        return self._heavy_type(rec.type)

    def _heavy_type(self, type_name: str) -> bool:
        t = self.types.get(type_name)
        return t is None or not t.inline

    @staticmethod
    def _cost(c: Candidate, heavy: bool) -> float | None:
        link = c.link
        if heavy:
            window = link.window.limit(c.heavy_window)
            if link.heavy >= window:
                return None
            return link.heavy / window + c.static_cost
        if link.light >= LIGHT_WINDOW:
            return None
        return link.light / LIGHT_SOFT + c.static_cost

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
            heavy = self._heavy(rec)
            excluded = {a.worker for a in rec.attempts if a.counted and a.outcome != "ok"} if rec.attempts else ()
            best: Candidate | None = None
            best_cost = 0.0
            fallback: Candidate | None = None
            fallback_cost = 0.0
            has_fresh = False
            avoid = rec.avoid or ()
            for c in cands:
                if c.link.peer_id in avoid:
                    continue  # refused it for credit, or ran a sibling replica
                is_excluded = c.link.peer_id in excluded
                has_fresh = has_fresh or not is_excluded
                cost = self._cost(c, heavy)
                if cost is None:
                    continue
                if is_excluded:
                    if fallback is None or cost < fallback_cost:
                        fallback, fallback_cost = c, cost
                elif best is None or cost < best_cost:
                    best, best_cost = c, cost
            if best is None and not has_fresh:
                best = fallback  # every capable worker already failed this task: try again anyway
            if best is None and avoid and all(c.link.peer_id in avoid for c in cands):
                q.popleft()  # no worker it may use: wait for one (a bounded time), let the others go ahead
                if time.monotonic() - rec.waiting_since > self.cfg.assign_timeout:
                    self._fail(rec, f"no live worker with capability {cap!r} that this task may use within "
                                    f"{self.cfg.assign_timeout:g} s" + self._attempt_summary(rec, prefix="; "))
                else:
                    skipped.append(rec)
                    if len(skipped) > 1000:
                        break
                continue
            if best is None:
                if fallback is not None or any(self._cost(c, heavy) is not None for c in cands):
                    skipped.append(q.popleft())  # another task may fit where this one may not go
                    if len(skipped) > 1000:
                        break
                    continue
                break  # every worker is full
            q.popleft()
            started.add(rec.id)
            self._start_attempt(rec, best.link, heavy)
        q.extendleft(reversed(skipped))

    def _no_worker(self, cap: str, q: deque[TaskRecord]) -> None:
        now = time.monotonic()
        if now - self.dht_looked.get(cap, -1e9) > LOOKUP_EVERY and self._nursery is not None:
            self.dht_looked[cap] = now
            self._nursery.start_soon(self._lookup, cap, self.node.cfg.network.connection_timeout)
        limit = self.cfg.assign_timeout
        while q and (q[0].state != PENDING or now - q[0].waiting_since > limit):
            rec = q.popleft()
            if rec.state != PENDING or rec.id not in self.active:
                continue
            self._fail(rec, f"no live worker with capability {cap!r} within {limit:g} s"
                       + self._attempt_summary(rec, prefix="; "))

    async def _lookup(self, cap: str, timeout: float) -> None:
        """Find workers beyond our mesh: DHT provider records per capability."""
        dht = getattr(self.node, "dht", None)
        if dht is None:
            return
        self.dht_looked[cap] = time.monotonic()
        with trio.move_on_after(timeout):
            try:
                infos = await dht.find_providers(provider_key(self.node.cfg, cap), 8)
            except Exception as exc:
                log.debug("find_providers(%s) failed: %s", cap, exc)
                return
            found = {}
            for info in infos:
                pid = str(info.peer_id)
                if pid == self.own_id:
                    continue
                found[pid] = info
                if info.addrs:
                    try:
                        self.node.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
                    except Exception:
                        pass
            if found:
                log.info("DHT: %d provider(s) of %s: %s", len(found), cap, ", ".join(found))
                self.dht_found[cap] = found
                self._wake.set()

    # -- attempts ---------------------------------------------------------------------------------------------------
    def _start_attempt(self, rec: TaskRecord, link: Link, heavy: bool) -> None:
        n = (rec.attempts[-1].n + 1) if rec.attempts else 1
        attempt = Attempt(n, link.peer_id, time.time())
        rec.attempts.append(attempt)
        if rec.group is not None and rec.avoid is not None:
            rec.avoid.add(link.peer_id)  # no sibling replica may run there
        rec.state = RUNNING
        rec.worker = link.peer_id
        rec.deadline = time.monotonic() + 2 * rec.timeout_s + self.grace
        link.inflight[rec.id] = rec
        if heavy:
            link.heavy += 1
        else:
            link.light += 1
        metrics.ASSIGNED.labels(rec.type).inc()
        self._event(rec, "assigned")
        req = TaskRequest(rec.id, rec.type, rec.payload, self.own_id, n, rec.reward, rec.timeout_s, rec.max_retries,
                          rec.created)
        if link.local:
            self.worker.execute(req, self._local_reply, self.local_active, self._nursery)
        else:
            self._send(link, req)

    def _local_reply(self, resp: TaskResponse) -> None:
        self._on_response(self.local, resp)

    def _release(self, link: Link, rec: TaskRecord) -> bool:
        if link.inflight.pop(rec.id, None) is None:
            return False
        if self._heavy(rec):
            link.heavy -= 1
        else:
            link.light -= 1
        return True

    def _send(self, link: Link, msg: Any) -> None:
        if link.state == "open" and link.writer is not None and not link.writer.closed:
            link.writer.send(msg)
            return
        link.outbox.append(msg)
        if link.state == "closed" and self._nursery is not None:
            link.state = "opening"
            self._nursery.start_soon(self._run_link, link)

    async def _run_link(self, link: Link) -> None:
        """Open a stream to the worker, pump it until it breaks, then fail what was in flight on it."""
        link.generation += 1
        stream = await self._open_stream(ID.from_base58(link.peer_id))
        if stream is None:
            link.open_failures += 1
            link.cooldown_until = time.monotonic() + min(0.5 * 2 ** link.open_failures, MAX_BACKOFF)
            link.state = "closed"
            link.outbox = []
            self._link_broken(link, "cannot reach the worker", sent=False)
            return
        link.open_failures = 0
        writer = FrameWriter(stream, self.max_frame)
        link.writer = writer
        link.state = "open"
        for msg in link.outbox:
            writer.send(msg)
        link.outbox = []
        owed = self.ledger.undelivered(link.peer_id)
        if owed:
            now = time.monotonic()
            for receipt in owed:
                writer.send(receipt)
                link.receipts_sent.append((now, receipt.task_id))
            self.ledger.mark_delivered([r.task_id for r in owed])
        reason = "stream closed"
        try:
            async with trio.open_nursery() as nursery:
                link.scope = nursery.cancel_scope
                nursery.start_soon(self._pump_writer, writer, nursery.cancel_scope)
                try:
                    await self._read_responses(link, FrameReader(stream, self.max_frame, self.protocol))
                except StreamClosed as exc:
                    reason = f"worker disconnected ({exc})"
                except FrameError as exc:
                    reason = f"bad frame from worker: {exc}"
                    log.warning("task stream to %s: %s", link.peer_id, exc)
                nursery.cancel_scope.cancel()
            if writer.closed and reason == "stream closed":
                reason = "worker disconnected (write failed)"
        finally:
            link.writer = None
            link.scope = None
            link.state = "closed"
            if link.receipts_sent:  # perhaps never read by the worker: send them again on the next stream
                self.ledger.mark_undelivered([t for _, t in link.receipts_sent])
                link.receipts_sent.clear()
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await stream.reset()
                except Exception:
                    pass
            self._link_broken(link, reason, sent=True)

    async def _open_stream(self, pid: ID) -> Any:
        """A task stream to the worker, dialling it first if needed; None when it cannot be had in time.

        The dial gets ``connection_timeout``; the stream itself only ``STREAM_OPEN_TIMEOUT``, after which the
        connection is taken for dead and closed, so the next attempt dials afresh instead of waiting on it again.
        """
        host = self.node.host
        timeout = self.node.cfg.network.connection_timeout
        open_timeout = min(STREAM_OPEN_TIMEOUT, timeout)
        try:
            if not host.get_network().get_connections(pid):
                with trio.fail_after(timeout):
                    await host.connect(PeerInfo(pid, self._addrs_of(pid.to_base58())))
            with trio.move_on_after(open_timeout):
                return await host.new_stream(pid, [self.protocol])
        except trio.TooSlowError:
            log.info("cannot open a task stream to %s: no connection within %g s", pid, timeout)
            return None
        except Exception as exc:
            log.info("cannot open a task stream to %s: %s", pid, exc)
            return None
        log.warning("no task stream to %s within %g s over an open connection: closing it as dead", pid, open_timeout)
        with trio.move_on_after(5):
            try:
                await host.get_network().close_peer(pid)
            except Exception as exc:
                log.debug("closing %s failed: %s", pid, exc)
        return None

    async def _pump_writer(self, writer: FrameWriter, scope: trio.CancelScope) -> None:
        try:
            await writer.run()
        except StreamClosed:
            scope.cancel()

    def _addrs_of(self, peer_id: str) -> list[multiaddr.Multiaddr]:
        rec = self.node.book.get(peer_id)
        texts = list(rec.addrs) if rec else []
        out = []
        for t in texts:
            try:
                out.append(multiaddr.Multiaddr(t))
            except Exception:
                continue
        for info in (found.get(peer_id) for found in self.dht_found.values()):
            if info is not None:
                out.extend(info.addrs)
        return out

    async def _read_responses(self, link: Link, reader: FrameReader) -> None:
        while True:
            for raw in await reader.read_frames():
                msg = reader.decode(raw)
                if isinstance(msg, TaskResponse):
                    self._on_response(link, msg)
                elif msg is not None:
                    log.warning("unexpected %s from worker %s", type(msg).__name__, link.peer_id)
            # One commit for everything this read finished; waiters and receipts follow right after it.
            self.db.commit_now()

    def _link_broken(self, link: Link, reason: str, sent: bool) -> None:
        for rec in list(link.inflight.values()):
            self._release(link, rec)
            if rec.state != RUNNING or not rec.attempts or rec.attempts[-1].worker != link.peer_id:
                continue
            if sent:
                self._attempt_failed(rec, "disconnected", reason)
            else:
                self._attempt_failed(rec, "unreachable", reason, counted=False)
        self._wake.set()

    # -- results ----------------------------------------------------------------------------------------------------
    def _current(self, link: Link, resp: TaskResponse) -> TaskRecord | None:
        rec = self.active.get(resp.task_id)
        if (rec is None or rec.state != RUNNING or not rec.attempts or rec.attempts[-1].n != resp.attempt
                or rec.attempts[-1].worker != link.peer_id or resp.worker != link.peer_id):
            return None
        return rec

    def _on_response(self, link: Link, resp: TaskResponse) -> None:
        rec = self._current(link, resp)
        if rec is None:
            metrics.LATE.inc()
            log.debug("ignored a response for %s attempt %d from %s (not current)", resp.task_id, resp.attempt,
                      link.peer_id)
            return
        if self._release(link, rec) and self._heavy(rec):
            link.window.observe(resp.elapsed_s, resp.window, resp.status == TASK_OK)
        self._wake.set()
        status = resp.status
        if status == TASK_OK:
            self._completed(rec, link, resp)
        elif status == TASK_BUSY and resp.error.startswith(CREDIT_REFUSAL):
            self._refused_for_credit(rec, link, resp.error)
        elif status == TASK_BUSY:
            rec.attempts.pop()  # not an attempt: the worker never started it
            link.window.busy(link.heavy)
            link.cooldown_until = time.monotonic() + BUSY_PENALTY
            self._enqueue(rec, front=True)
        elif status == TASK_INVALID:
            self._end_attempt(rec, "invalid", resp.error)
            self.ledger.note(link.peer_id, "success")  # the worker did its job: the payload is at fault
            self._fail(rec, (f"the function raised on {link.peer_id}: " if rec.type == "function"
                             else f"invalid payload for {rec.type!r}: ") + resp.error)
        elif status == TASK_TIMED_OUT:
            self.ledger.note(link.peer_id, "timeout")
            self._attempt_failed(rec, "timeout", resp.error)
        elif status == TASK_REJECTED:
            self._attempt_failed(rec, "rejected", resp.error, backoff=False)
        elif status in (TASK_FAILED, TASK_CANCELLED):
            self.ledger.note(link.peer_id, "failure")
            self._attempt_failed(rec, "failed" if status == TASK_FAILED else "cancelled", resp.error)
        else:
            self.ledger.note(link.peer_id, "failure")
            self._attempt_failed(rec, "failed", f"unknown response status {status}")

    def _completed(self, rec: TaskRecord, link: Link, resp: TaskResponse) -> None:
        digest = result_digest(resp.result)
        t = self.types.get(rec.type)
        problem = ""
        if digest != resp.result_digest:
            problem = "result does not match its digest"
        elif len(resp.result) > self.cfg.max_payload_bytes:
            problem = "result over tasks.max_payload_bytes"
        elif t is not None and t.verify is not None and t.verify(rec.payload, resp.result) is False:
            problem = f"result does not verify for {rec.type!r}"
            self.ledger.note(link.peer_id, "wrong")  # not merely failed: a result that is wrong
            metrics.WRONG.labels("verifier").inc()
            self._attempt_failed(rec, "wrong", problem)
            return
        if problem:
            self.ledger.note(link.peer_id, "failure")
            self._attempt_failed(rec, "failed", problem)
            return
        self._end_attempt(rec, "ok", "")
        rec.state = COMPLETED
        rec.result = resp.result
        rec.worker = link.peer_id
        rec.error = None
        rec.finished = time.time()
        if rec.group is None:  # a replica is paid only if the majority agrees with it (redundancy.py)
            self._pay(rec, link.peer_id, resp.attempt, digest)
        self._finalize(rec)

    def _pay(self, rec: TaskRecord, worker: str, attempt: int, digest: str) -> None:
        """Sign and record the receipt for ``rec``'s result; it goes out to the worker after the commit."""
        receipt = sign_receipt(TaskReceipt(rec.id, attempt, self.own_id, worker, rec.reward, digest,
                                           rec.finished or time.time(), b""), self.key)
        self.ledger.record_spent(receipt, self.own_key_bytes)
        self.ledger.note(worker, "success")
        if worker == self.own_id:
            link = self.local
        else:
            link = self.links.get(worker) or self.links.setdefault(worker, Link(worker))
        self.db.after_commit(lambda: self._deliver_receipt(link, receipt))

    def _refused_for_credit(self, rec: TaskRecord, link: Link, error: str) -> None:
        """The worker will not serve us until we work for it (credit.py): try the others; fail when all refused."""
        self._end_attempt(rec, "refused", error, counted=False)
        if rec.avoid is None:
            rec.avoid = set()
        rec.avoid.add(link.peer_id)
        if not self._capable_peers(rec.capability) - rec.avoid:
            self._fail(rec, f"every capable worker refused it: {error}")
            return
        self.journal.save_attempts(rec)
        self._enqueue(rec, front=True)

    def _deliver_receipt(self, link: Link, receipt: TaskReceipt) -> None:
        """Receipts go out in batches (``RECEIPT_BATCH_S``): off the critical path of the next task."""
        self.receipts.append((link, receipt))
        self._receipts_wake.set()

    async def _receipt_sender(self) -> None:
        while True:
            if not self.receipts:
                await self._receipts_wake.wait()
                self._receipts_wake = trio.Event()
            await trio.sleep(RECEIPT_BATCH_S)
            # Bounded batches: a burst of thousands must not sit in front of new requests on the streams, nor make
            # a worker verify thousands of signatures before it reads its next request.
            batch, self.receipts = self.receipts[:RECEIPT_BATCH_MAX], self.receipts[RECEIPT_BATCH_MAX:]
            delivered = []
            now = time.monotonic()
            for link, receipt in batch:
                if link.local:
                    self.worker.on_receipt(receipt, None)
                elif link.state == "open" and link.writer is not None and not link.writer.closed:
                    link.writer.send(receipt)
                    sent = link.receipts_sent
                    sent.append((now, receipt.task_id))
                    while sent and sent[0][0] < now - RESEND_WINDOW_S:
                        sent.popleft()
                else:
                    continue  # stays undelivered; sent when the next stream to this worker opens
                delivered.append(receipt.task_id)
            if delivered:
                self.ledger.mark_delivered(delivered)

    async def _redeliver_loop(self) -> None:
        """Receipts owed to a live worker that gets no new task would wait forever for a stream: open one."""
        while True:
            await trio.sleep(REDELIVER_EVERY)
            now = time.monotonic()
            for worker in self.ledger.owed_workers():
                rec = self.node.book.get(worker)
                if rec is None or not self.node.book.is_live(rec):
                    continue
                link = self.links.get(worker)
                if link is None:
                    link = self.links[worker] = Link(worker)
                if link.state == "closed" and link.cooldown_until <= now and self._nursery is not None:
                    link.state = "opening"
                    self._nursery.start_soon(self._run_link, link)

    def _end_attempt(self, rec: TaskRecord, outcome: str, reason: str, counted: bool = True) -> None:
        a = rec.attempts[-1]
        a.ended, a.outcome, a.reason, a.counted = time.time(), outcome, reason, counted

    def _attempt_failed(self, rec: TaskRecord, outcome: str, reason: str, counted: bool = True,
                        backoff: bool = True) -> None:
        self._end_attempt(rec, outcome, reason, counted)
        if counted and rec.counted_attempts > rec.max_retries:
            self._fail(rec, f"failed after {rec.counted_attempts} attempt(s)" + self._attempt_summary(rec, ": "))
            return
        if counted:
            self.retried += 1
            metrics.RETRIED.labels(rec.type, outcome).inc()
        log.info("task %s attempt %d on %s: %s (%s); %s", rec.id, rec.attempts[-1].n, rec.attempts[-1].worker,
                 outcome, reason, "retrying")
        self.journal.save_attempts(rec)
        rec.state = PENDING
        self._event(rec, "retry")
        n = max(1, rec.counted_attempts)
        delay = min(self.cfg.retry_backoff * 2 ** (n - 1), MAX_BACKOFF) * random.uniform(0.75, 1.25)
        if not backoff or not counted:
            delay = 0.05 if not counted else 0.0
        if delay > 0:
            self._delay(rec, delay)
        else:
            self._enqueue(rec, front=True)

    @staticmethod
    def _attempt_summary(rec: TaskRecord, prefix: str) -> str:
        parts = [f"#{a.n} {a.worker}: {a.outcome}" + (f" ({a.reason})" if a.reason else "")
                 for a in rec.attempts if a.outcome != "ok"]
        return prefix + "; ".join(parts) if parts else ""

    def _fail(self, rec: TaskRecord, error: str) -> None:
        rec.state = FAILED
        rec.error = error
        rec.result = None
        rec.finished = time.time()
        log.warning("task %s (%s) failed: %s", rec.id, rec.type, error)
        self._finalize(rec)

    def _finalize(self, rec: TaskRecord) -> None:
        if rec.group is not None:  # a replica: its redundant task decides (redundancy.py)
            self.active.pop(rec.id, None)
            self.redundancy.replica_final(rec)
            return
        self.active.pop(rec.id, None)
        self.recent[rec.id] = rec
        while len(self.recent) > RECENT_KEEP:
            self.recent.popitem(last=False)
        self.journal.finish(rec)
        self.totals[rec.state] = self.totals.get(rec.state, 0) + 1
        if rec.state == COMPLETED:
            metrics.COMPLETED.labels(rec.type).inc()
        elif rec.state == FAILED:
            metrics.FAILED.labels(rec.type).inc()
        metrics.LATENCY.observe(max(0.0, rec.finished - rec.created) if rec.finished else 0.0)
        self._event(rec, rec.state)
        event = self.events.pop(rec.id, None)
        if event is not None:
            self.db.after_commit(event.set)

    # -- timeouts and cancellation ----------------------------------------------------------------------------------
    async def _watchdog(self) -> None:
        """Attempts whose worker neither answered nor disconnected in 2 x timeout + grace are given up on."""
        while True:
            await trio.sleep(0.5)
            now = time.monotonic()
            inflight = 0
            for link in [self.local, *self.links.values()]:
                inflight += len(link.inflight)
                for rec in [r for r in link.inflight.values() if r.deadline < now]:
                    self._release(link, rec)
                    if rec.state != RUNNING:
                        continue
                    a = rec.attempts[-1]
                    self._cancel_remote(link, rec, a.n, "no answer in time")
                    self.ledger.note(link.peer_id, "timeout")
                    self._attempt_failed(rec, "timeout", f"no answer from the worker within "
                                                         f"{2 * rec.timeout_s + self.grace:g} s")
            metrics.RUNNING.set(inflight)

    def _cancel_remote(self, link: Link, rec: TaskRecord, attempt: int, reason: str) -> None:
        if link.local:
            scope = self.local_active.get((rec.id, attempt))
            if scope is not None:
                scope.cancel()
        elif link.state == "open" and link.writer is not None and not link.writer.closed:
            link.writer.send(TaskCancel(rec.id, attempt, reason))

    def cancel(self, task_id: str) -> TaskRecord | None:
        rec = self.active.get(task_id)
        if rec is None:
            return None
        self.redundancy.cancel(task_id)
        if rec.state == RUNNING and rec.attempts:
            a = rec.attempts[-1]
            link = self.local if a.worker == self.own_id else self.links.get(a.worker)
            if link is not None:
                self._release(link, rec)
                self._cancel_remote(link, rec, a.n, "cancelled by the user")
            self._end_attempt(rec, "cancelled", "cancelled by the user")
        rec.state = CANCELLED
        rec.error = "cancelled by the user"
        rec.finished = time.time()
        self._finalize(rec)
        return rec

    # -- views ------------------------------------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        rec = self.active.get(task_id) or self.recent.get(task_id)
        if rec is None:
            rec = self.journal.get(task_id)
        return rec

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord | None:
        rec = self.get(task_id)
        if rec is None or rec.state in FINAL_STATES:
            return rec
        event = self.events.get(task_id)
        if event is None:
            event = self.events[task_id] = trio.Event()
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


def provider_key(cfg: Any, capability: str) -> str:
    """The DHT key under which workers announce a capability."""
    return f"/{cfg.network.protocol_version}/task-capability/{capability}"
