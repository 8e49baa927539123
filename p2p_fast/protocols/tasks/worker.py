"""The worker side of the task protocol: accept requests, run them in slots, answer, collect receipts.

One inbound stream per submitter carries many requests (pipelined) and their responses, in whatever order they
finish. ``echo`` runs right in the reader (no slot, no process hop); ``storage`` runs on the event loop (it is I/O);
everything else takes one of ``tasks.slots`` slots and runs in the process pool with the task's timeout. With every
slot busy a request may wait in a short queue (``tasks.queue_limit``); beyond that it is answered ``busy`` and the
submitter picks another worker. Waiting requests get a free slot in order of their submitter's credit balance with
this worker, and a submitter too deep in debt is answered ``busy: credit`` (``credit.py``). When the submitter's
stream goes away its running tasks are cancelled: nobody could receive their results.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Callable, Protocol, Sequence

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2p_fast.core.config import TasksSection

from p2p_fast.core import metrics as node_metrics
from p2p_fast.protocols.messages import (TASK_BUSY, TASK_CANCELLED, TASK_FAILED, TASK_INVALID, TASK_OK, TASK_REJECTED,
                                 TASK_TIMED_OUT, TaskCancel, TaskReceipt, TaskRequest, TaskResponse)
from p2p_fast.protocols.tasks.limits import NOT_ALLOWED, SubmitterPolicy
from p2p_fast.protocols.tasks import metrics
from p2p_fast.protocols.tasks.builtins import InvalidPayload
from p2p_fast.protocols.tasks.credit import GaveWay, PriorityGate
from p2p_fast.protocols.tasks.functions import FUNCTION_TYPE, split
from p2p_fast.protocols.tasks.ledger import Ledger, result_digest
from p2p_fast.protocols.tasks.packages import PackageError, Packages
from p2p_fast.protocols.tasks.pool import PoolCall, PoolClosed, ProcessPool, TaskFailed
from p2p_fast.protocols.tasks.storage import Storage
from p2p_fast.protocols.tasks.types import TaskType, TaskTypes
from p2p_fast.protocols.tasks.wire import FRAME_OVERHEAD, FrameError, FrameReader, FrameWriter, StreamClosed

log = logging.getLogger(__name__)
STATUS_NAMES = {TASK_OK: "ok", TASK_FAILED: "failed", TASK_REJECTED: "rejected", TASK_TIMED_OUT: "timeout",
                TASK_BUSY: "busy", TASK_CANCELLED: "cancelled", TASK_INVALID: "invalid"}
MAX_TIMEOUT_S = 86400.0  # what a submitter may ask for (the API's limit too)
# A batch (requests run one after the other in one pool child, one pipe write for all): about this much of the
# function's recent run time, at most BATCH_MAX requests. Short, so that the other slots share the queue and a
# request cancelled after its batch went out (it still runs; its answer is dropped) wastes little.
BATCH_TIME_S = 0.005
BATCH_MAX = 32
MIN_ELAPSED_S = 1e-4
ELAPSED_WEIGHT = 0.2
MAX_LEARNED = 1024  # run times kept (per type, and per function a client named)


class Reply(Protocol):
    """How a request is answered: ``reply(resp)`` queues the response; ``await reply.flush()`` writes what is
    queued from the calling task (``FrameWriter.flush``)."""

    def __call__(self, resp: TaskResponse) -> None: ...

    async def flush(self) -> None: ...


class StreamReplies:
    """The answers on one task stream: settles the submitter's credit for each and queues it on the writer."""

    __slots__ = ("writer", "admitted", "credit", "submitter")

    def __init__(self, writer: FrameWriter, admitted: dict[tuple[str, int], int], credit: Any, submitter: str) -> None:
        self.writer = writer
        self.admitted = admitted
        self.credit = credit
        self.submitter = submitter

    def __call__(self, resp: TaskResponse) -> None:
        reward = self.admitted.pop((resp.task_id, resp.attempt), None)
        if reward is not None:
            self.credit.settle(self.submitter, reward, ok=resp.status == TASK_OK)
        if not self.writer.closed:
            self.writer.send(resp)

    async def flush(self) -> None:
        """A finished task's answer leaves now instead of at the writer task's next step."""
        await self.writer.flush()


class BatchBudget:
    """What one batch may hold: about ``BATCH_TIME_S`` of expected run time, each request's learned under its key
    (its type, or its function), the leader's included. A request whose run time is not known yet does not fit (it
    waits for a slot of its own, and is timed there); neither does one after the leader's if the leader's is not."""

    def __init__(self, learned: dict[str, float], leader_key: str) -> None:
        self.learned = learned
        first = learned.get(leader_key)
        self.left = -1.0 if first is None else BATCH_TIME_S - max(first, MIN_ELAPSED_S)

    def fits(self, call: PoolCall) -> bool:
        expected = self.learned.get(call.key)
        if expected is None or self.left < 0:
            return False
        cost = max(expected, MIN_ELAPSED_S)
        if cost > self.left:
            return False
        self.left -= cost
        return True


class Worker:
    """Runs tasks for submitters (remote ones over streams, and the local node directly)."""

    def __init__(self, host: IHost, cfg: TasksSection, protocol: str, capabilities: Callable[[], Sequence[str]],
                 private_network: bool, types: TaskTypes, pool: ProcessPool, ledger: Ledger, storage: Storage,
                 packages: Packages) -> None:
        self.host = host
        self.cfg = cfg
        self.capabilities = capabilities
        self.private_network = private_network  # a PSK network: its members may send functions
        self.types = types
        self.pool = pool
        self.ledger = ledger
        self.storage = storage
        self.peer_id = host.get_id()
        self.own_id = str(self.peer_id)
        self.protocol = protocol
        self.max_frame = self.cfg.max_payload_bytes + FRAME_OVERHEAD
        self.slots = self.cfg.slots
        self.gate = PriorityGate(max(1, self.slots))
        # What one submitter may keep here at once without "busy" (told in every response: window.py).
        self.window = self.slots + self.cfg.queue_limit if self.slots else None
        self.running = 0
        self.queued = 0
        self.executed: dict[str, int] = {}
        self.streams = 0
        self.submitters: dict[str, int] = {}  # peer id -> open task streams from it (the connection manager asks)
        self.policy = SubmitterPolicy(self.cfg)  # tasks.allowed_submitters, tasks.submit_rate / submit_burst
        self.packages = packages
        self._nursery: trio.Nursery | None = None  # where batches run (start); without it, one request per slot
        self.stopping = False  # stop(): the service is closing
        self._stream_scopes: set[trio.CancelScope] = set()
        self._elapsed: dict[str, float] = {}  # running mean of each pooled function's run time, seconds

    def start(self, nursery: trio.Nursery) -> None:
        """Batches of pooled requests run in ``nursery`` (the task service's): a batch serves several streams and
        must not end with the one whose request started it."""
        self._nursery = nursery

    def stop(self) -> None:
        """The task service is stopping: end every task stream now and accept no new one, before the pool, the
        batches' nursery and the journal close under them. Their submitters see the streams end: running tasks are
        retried elsewhere, and receipts those streams carried are sent again on the next stream."""
        self.stopping = True
        for scope in list(self._stream_scopes):
            scope.cancel()

    # -- views ------------------------------------------------------------------------------------------------------
    def load(self) -> tuple[int, int, int, float]:
        try:
            cpu = os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:
            cpu = 0.0
        return self.slots, max(0, self.slots - self.running), self.queued, round(cpu, 3)

    def can_run(self, type_name: str) -> tuple[TaskType | None, str]:
        t = self.types.get(type_name)
        if t is None:
            return None, f"unknown task type {type_name!r} on worker {self.own_id}"
        if t.capability not in self.capabilities():
            return None, f"worker {self.own_id} lacks capability {t.capability!r} for {type_name!r} tasks"
        if not t.inline and self.slots == 0:
            return None, f"worker {self.own_id} has no task slots"
        return t, ""

    # -- inbound streams --------------------------------------------------------------------------------------------
    async def handle_stream(self, stream: Any) -> None:
        remote: ID = stream.muxed_conn.peer_id
        writer = FrameWriter(stream, self.max_frame)
        reader = FrameReader(stream, self.max_frame, self.protocol)
        active: dict[tuple[str, int], trio.CancelScope] = {}
        admitted: dict[tuple[str, int], int] = {}  # credit held for this stream's requests until they are answered
        self.streams += 1
        self.submitters[str(remote)] = self.submitters.get(str(remote), 0) + 1
        scope = trio.CancelScope()
        self._stream_scopes.add(scope)
        if self.stopping:
            scope.cancel()
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, writer, nursery.cancel_scope)
                    try:
                        await self._read(reader, writer, remote, active, admitted, nursery)
                    except (StreamClosed, FrameError) as exc:
                        if isinstance(exc, FrameError):
                            node_metrics.MESSAGES_REJECTED.labels(self.protocol, "bad-frame").inc()
                            log.warning("closing task stream from %s: %s", remote, exc)
                        else:
                            log.debug("task stream from %s ended: %s", remote, exc)
                    nursery.cancel_scope.cancel()  # the submitter is gone: stop its tasks
        except Exception:
            # A bug on one stream must not take the node down (py-libp2p would let it end the whole process).
            node_metrics.MESSAGES_REJECTED.labels(self.protocol, "handler-error").inc()
            log.exception("task stream from %s failed; closing it", remote)
        finally:
            self._stream_scopes.discard(scope)
            self.streams -= 1
            for (_, _), reward in admitted.items():  # cancelled with the stream: no result went out
                self.ledger.credit.settle(str(remote), reward, ok=False)
            admitted.clear()
            left = self.submitters.pop(str(remote), 1) - 1
            if left > 0:
                self.submitters[str(remote)] = left
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await stream.reset()
                except Exception:
                    pass

    async def _write(self, writer: FrameWriter, scope: trio.CancelScope) -> None:
        try:
            await writer.run()
        except StreamClosed as exc:
            log.debug("task stream write failed: %s", exc)
            scope.cancel()

    async def _read(self, reader: FrameReader, writer: FrameWriter, remote: ID,
                    active: dict[tuple[str, int], trio.CancelScope], admitted: dict[tuple[str, int], int],
                    nursery: trio.Nursery) -> None:
        credit = self.ledger.credit
        submitter = str(remote)
        reply = StreamReplies(writer, admitted, credit, submitter)

        while True:
            for raw in await reader.read_frames():
                msg = reader.decode(raw)
                if msg is None:
                    continue
                if isinstance(msg, TaskRequest):
                    if msg.submitter != str(remote):
                        node_metrics.MESSAGES_REJECTED.labels(self.protocol, "wrong-submitter").inc()
                        reply(self._response(msg, TASK_REJECTED, "submitter field does not match the stream's peer"))
                        continue
                    refused = self.policy.refuse(msg.submitter)
                    if refused is not None:
                        reply(self._refusal(msg, refused))
                        continue
                    key = (msg.task_id, msg.attempt)
                    if key not in admitted:
                        no_credit = credit.admit(submitter, msg.reward)
                        if no_credit is not None:
                            node_metrics.MESSAGES_REJECTED.labels(self.protocol, "credit").inc()
                            reply(self._response(msg, TASK_BUSY, no_credit))
                            continue
                        admitted[key] = msg.reward
                    self.execute(msg, reply, active, nursery)
                elif isinstance(msg, TaskCancel):
                    scope = active.get((msg.task_id, msg.attempt))
                    if scope is not None:
                        log.info("task %s attempt %d cancelled by its submitter: %s", msg.task_id, msg.attempt,
                                 msg.reason)
                        scope.cancel()
                elif isinstance(msg, TaskReceipt):
                    self.on_receipt(msg, remote)
                else:
                    node_metrics.MESSAGES_REJECTED.labels(self.protocol, "wrong-type").inc()
                    log.warning("unexpected %s on a task stream from %s", type(msg).__name__, remote)

    def _refusal(self, req: TaskRequest, reason: str) -> TaskResponse:
        """Not allowed: rejected (the submitter tries another worker); over the rate: busy (it backs off first)."""
        node_metrics.MESSAGES_REJECTED.labels(self.protocol, reason).inc()
        metrics.REFUSED.labels(reason).inc()
        if reason == NOT_ALLOWED:
            return self._response(req, TASK_REJECTED, f"worker {self.own_id} does not run tasks of {req.submitter} "
                                                      "(tasks.allowed_submitters)")
        return self._response(req, TASK_BUSY, f"worker {self.own_id}: submitter {req.submitter} is over its rate "
                                              f"limit ({self.cfg.submit_rate:g} requests/s)")

    # -- execution --------------------------------------------------------------------------------------------------
    def _response(self, req: TaskRequest, status: int, error: str = "", result: bytes = b"",
                  elapsed: float = 0.0) -> TaskResponse:
        metrics.EXECUTED.labels(req.task_type if status != TASK_REJECTED else "-", STATUS_NAMES[status]).inc()
        name = STATUS_NAMES[status]
        self.executed[name] = self.executed.get(name, 0) + 1
        return TaskResponse(req.task_id, req.attempt, self.own_id, status, error, result,
                            result_digest(result) if status == TASK_OK else "", elapsed, self.window)

    def execute(self, req: TaskRequest, reply: Reply, active: dict[tuple[str, int], trio.CancelScope],
                nursery: trio.Nursery) -> None:
        """Start ``req``; ``reply`` receives its response (at once for echo, busy and rejections)."""
        if req.task_type == FUNCTION_TYPE and (why := self.function_refusal(req.submitter)):
            reply(self._response(req, TASK_REJECTED, why))  # before anything else: nothing of it is ever run
            return
        t, why = self.can_run(req.task_type)
        if t is None:
            reply(self._response(req, TASK_REJECTED, why))
            return
        if not (math.isfinite(req.timeout_s) and 0 < req.timeout_s <= MAX_TIMEOUT_S):
            node_metrics.MESSAGES_REJECTED.labels(self.protocol, "bad-field").inc()
            reply(self._response(req, TASK_REJECTED,
                                 f"timeout_s {req.timeout_s!r} is not within (0, {MAX_TIMEOUT_S:g}]"))
            return
        if len(req.payload) > self.cfg.max_payload_bytes:
            reply(self._response(req, TASK_REJECTED, f"payload of {len(req.payload)} bytes is over this worker's "
                                                     f"{self.cfg.max_payload_bytes}-byte limit"))
            return
        if t.name == "echo":
            reply(self._response(req, TASK_OK, result=req.payload))
            return
        if t.inline:
            nursery.start_soon(self._run_inline, req, t, reply, active)
            return
        if self.running + self.queued >= self.slots + self.cfg.queue_limit and \
                not self.gate.give_way(self.ledger.credit.priority(req.submitter)):
            reply(self._response(req, TASK_BUSY, f"worker {self.own_id}: all {self.slots} slots busy"))
            return
        self.queued += 1
        nursery.start_soon(self._run_pooled, req, t, reply, active)

    def function_refusal(self, submitter: str) -> str:
        """Why this worker does not run a Python function from ``submitter`` ("" when it does). Checked before
        anything of the task is unpickled: a function is the submitter's code, run with this worker's rights."""
        if not self.cfg.accept_functions:
            return f"worker {self.own_id} does not run Python functions (tasks.accept_functions is false)"
        if submitter == self.own_id or submitter in self.policy.allowed:
            return ""
        if not self.policy.allowed and self.private_network:
            return ""  # a PSK network: every member is trusted with functions
        return (f"worker {self.own_id} runs Python functions only from tasks.allowed_submitters (or, with none listed, "
                f"from members of a network with a PSK); {submitter} is not one")

    async def _function_payload(self, req: TaskRequest) -> bytes:
        """The child's payload: the packages the function needs, installed here first (their directories added)."""
        from p2p_fast.protocols.tasks.functions import pack_header

        header, body = split(req.payload)
        if not header.get("packages"):
            return req.payload  # nothing to install: the child takes the payload as it came (no paths to add)
        paths = await self.packages.ensure(header.get("packages", []), req.submitter)
        return pack_header({"paths": paths}, body)

    async def _run_inline(self, req: TaskRequest, t: TaskType, reply: Reply,
                          active: dict[tuple[str, int], trio.CancelScope]) -> None:
        start = time.monotonic()
        status, error, result = TASK_OK, "", b""
        with trio.CancelScope() as scope:
            active[(req.task_id, req.attempt)] = scope
            try:
                with trio.fail_after(req.timeout_s):
                    result = await self.storage.run(req.payload)
            except trio.TooSlowError:
                status, error = TASK_TIMED_OUT, f"timed out after {req.timeout_s:g} s on {self.own_id}"
            except InvalidPayload as exc:
                status, error = TASK_INVALID, str(exc)
            except Exception as exc:
                status, error = TASK_FAILED, f"{type(exc).__name__}: {exc}"
            finally:
                active.pop((req.task_id, req.attempt), None)
        if scope.cancelled_caught:
            status, error, result = TASK_CANCELLED, "cancelled by the submitter", b""
        reply(self._response(req, status, error, result, time.monotonic() - start))
        await reply.flush()

    def _batch_key(self, req: TaskRequest, t: TaskType) -> str | None:
        """What ``req``'s run time is learned under (its type; for a function, the function, when the client named
        it), or None when it may not run in another request's batch: its payload does not go to the child as it came
        (a function that ships packages has them installed first, in a slot of its own)."""
        if self._nursery is None:
            return None
        if t.name != FUNCTION_TYPE:
            return t.fn_ref
        try:
            header, _ = split(req.payload)
        except InvalidPayload:
            return None  # answered by the slot path, with the reason
        if header.get("packages"):
            return None
        fid = header.get("fn")
        return f"{t.fn_ref}#{fid}" if isinstance(fid, str) and len(fid) <= 64 else t.fn_ref

    def _batch_budget(self, leader: PoolCall) -> BatchBudget:
        """Which waiting requests a request that got a slot takes along (see :class:`BatchBudget`). Not a share of
        the queue per slot: requests wait only while every slot is busy, and halving the batches (measured: 5 per
        batch instead of 9 for no-ops) cost the worker more than the other slots' idle moments, which
        ``BATCH_TIME_S`` bounds."""
        return BatchBudget(self._elapsed, leader.key)

    async def _run_batch(self, calls: list[PoolCall]) -> None:
        """Run a batch in the slot of its first request (the runner owns the permit: it outlives any one stream)."""
        self.running += 1
        metrics.WORKER_RUNNING.set(self.running)
        metrics.POOL_BATCHES.inc()
        metrics.POOL_BATCHED.inc(len(calls))
        try:
            await self.pool.run_batch(calls)
        finally:
            self.running -= 1
            self.gate.release()
            metrics.WORKER_RUNNING.set(self.running)
            for c in calls:
                if c.elapsed is not None:
                    old = self._elapsed.get(c.key)
                    self._elapsed[c.key] = c.elapsed if old is None else old + ELAPSED_WEIGHT * (c.elapsed - old)
            if len(self._elapsed) > MAX_LEARNED:
                self._elapsed.clear()  # many one-off functions: start learning afresh

    async def _run_pooled(self, req: TaskRequest, t: TaskType, reply: Reply,
                          active: dict[tuple[str, int], trio.CancelScope]) -> None:
        """Wait for a slot, run ``req`` in the process pool, answer. A request that gets a slot (the gate's permit)
        takes waiting short requests along into one batch for one pool child (``_batch_budget``); those are answered
        as each finishes, and hold no slot of their own."""
        status, error, result = TASK_OK, "", b""
        start = time.monotonic()
        elapsed: float | None = None
        key = self._batch_key(req, t)
        call = PoolCall(t.fn_ref, req.payload, req.timeout_s, key) if key is not None else None
        with trio.CancelScope() as scope:
            active[(req.task_id, req.attempt)] = scope
            waited = acquired = False
            try:
                held = await self.gate.acquire(self.ledger.credit.priority(req.submitter), call)
                waited = True
                self.queued -= 1
                start = time.monotonic()
                if held and call is not None:  # the slot goes to the batch this request leads
                    assert self._nursery is not None
                    if self.stopping:  # the batches' nursery is closing and this stream is cancelled: end here
                        self.gate.release()
                        await trio.lowlevel.checkpoint()
                    followers = self.gate.take(BATCH_MAX - 1, self._batch_budget(call).fits)
                    if followers:
                        self._nursery.start_soon(self._run_batch, [call, *followers])
                    else:  # this request's alone: run it here, a scheduler round sooner (its stream owns it anyway)
                        await self._run_batch([call])
                elif held:
                    acquired = True
                    self.running += 1
                    metrics.WORKER_RUNNING.set(self.running)
                    payload = req.payload
                    if t.name == FUNCTION_TYPE:
                        payload = await self._function_payload(req)
                    result = await self.pool.run(t.fn_ref, payload, req.timeout_s)
                if call is not None:
                    result = await call.result()
                    elapsed = call.elapsed
                if len(result) > self.cfg.max_payload_bytes:
                    status, error, result = TASK_FAILED, f"result of {len(result)} bytes is over the limit", b""
            except trio.TooSlowError:
                status = TASK_TIMED_OUT
                error = f"timed out after {req.timeout_s:g} s on {self.own_id} (its process was killed)"
            except TaskFailed as exc:
                status, error = (TASK_INVALID if exc.invalid else TASK_FAILED), str(exc)
            except InvalidPayload as exc:
                status, error = TASK_INVALID, str(exc)
            except PackageError as exc:
                status, error = TASK_FAILED, str(exc)
            except PoolClosed as exc:
                status, error = TASK_REJECTED, str(exc)
            except GaveWay:
                status, error = TASK_BUSY, (f"worker {self.own_id}: all {self.slots} slots busy (this request gave "
                                            "its place in the queue to a peer with more credit here)")
            finally:
                active.pop((req.task_id, req.attempt), None)
                if call is not None and not call.done:
                    call.abandon()  # cancelled: stopped if running, never started otherwise
                if acquired:
                    self.running -= 1
                    self.gate.release()
                    metrics.WORKER_RUNNING.set(self.running)
                elif not waited:
                    self.queued -= 1
        if scope.cancelled_caught:
            status, error, result = TASK_CANCELLED, "cancelled by the submitter", b""
        if status == TASK_TIMED_OUT:
            log.info("task %s attempt %d timed out after %.1f s", req.task_id, req.attempt, req.timeout_s)
        reply(self._response(req, status, error, result, time.monotonic() - start if elapsed is None else elapsed))
        await reply.flush()

    # -- receipts ---------------------------------------------------------------------------------------------------
    def on_receipt(self, receipt: TaskReceipt, remote: ID | None) -> None:
        if self.stopping:  # the journal is closing; the stream is cancelled, so the submitter sends it again
            return
        if remote is not None and receipt.submitter != str(remote):
            metrics.RECEIPTS_REJECTED.inc()
            log.warning("receipt for %s from %s names submitter %s: refused", receipt.task_id, remote,
                        receipt.submitter)
            return
        submitter = remote if remote is not None else self.peer_id
        key = submitter.extract_public_key()
        if key is None:
            try:
                key = self.host.get_peerstore().pubkey(submitter)
            except Exception:
                key = None
        if key is None:
            metrics.RECEIPTS_REJECTED.inc()
            log.warning("receipt for %s: no public key for %s", receipt.task_id, submitter)
            return
        problem = self.ledger.record_earned(receipt, key)
        if problem:
            metrics.RECEIPTS_REJECTED.inc()
            log.warning("receipt for %s from %s refused: %s", receipt.task_id, submitter, problem)
