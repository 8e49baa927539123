"""The task service of one node: worker and submitter together, with their journal, ledger and process pool.

This is what ``node.tasks`` is. The console, the HTTP routes (``p2p_fast.app.api.tasks``, built by the application
from this service) and ``node.status()`` use only its public methods: ``submit``/``submit_many``, ``wait``,
``wait_record``, ``get``, ``list_tasks``, ``cancel``, ``counts``, ``load``, ``ledger_status``, ``put_blob``,
``busy_with``, and its ``cfg`` and ``ledger``. It takes from the node only what ``ports.TaskEnv`` lists.
"""

from __future__ import annotations

import logging
import random
from contextlib import AsyncExitStack, nullcontext
from pathlib import Path
from typing import Any

import trio

from p2p_fast.protocols.tasks.dispatcher import Dispatcher
from p2p_fast.protocols.tasks.finder import provider_key
from p2p_fast.protocols.tasks.journal import FINAL_STATES, PENDING, RUNNING, Database, StorageError, TaskJournal, TaskRecord
from p2p_fast.protocols.tasks.ledger import Ledger
from p2p_fast.protocols.tasks.packages import Packages
from p2p_fast.protocols.tasks.pool import ProcessPool
from p2p_fast.protocols.tasks.ports import TaskEnv
from p2p_fast.protocols.tasks.spec import TaskSpec
from p2p_fast.protocols.tasks.storage import Storage
from p2p_fast.protocols.tasks.types import TaskTypes
from p2p_fast.protocols.tasks.wire import RECEIPT_BATCH_VERSION, protocol_version
from p2p_fast.protocols.tasks.worker import Worker

log = logging.getLogger(__name__)
DB_FILE = "tasks.sqlite3"
# Provider records are announced at these delays (seconds, jittered), then every PROVIDE_EVERY. Not at once: in a
# join storm every announcement dials the ~20 peers closest to the key, and all of them at the same moment.
PROVIDE_SCHEDULE = (30.0, 120.0)
PROVIDE_EVERY = 600.0
PROVIDERS_PER_KEY = 4  # half what a lookup reads (finder.PROVIDERS_WANTED, 8): records outlive rounds, two fill it


def provide_chance(network_size: int) -> float:
    """The chance that this worker announces itself in a round: about ``PROVIDERS_PER_KEY`` workers per capability
    and round whatever the network's size (records outlive a round, so a lookup finds more). Every worker announcing
    the same key sends all of them to the same ~20 peers closest to it (measured at N = 31: each such announcement
    round connected nodes to every other and was pruned 30 s later), an O(N) load on those peers for records of
    which a lookup reads 8. At N = 100, 10 announcers per key and round still sent 10 connections each to the ~20
    nodes closest to the key within seconds, and slow announcements under load left them open past the grace period
    (nodes at 25-35 settled peers pruning 3-4 minutes after the start); 4 per round is 2.5 times fewer. The live view names the workers of our mesh anyway; the records are for those beyond
    it, and a changing sample per round keeps them fresh."""
    return min(1.0, PROVIDERS_PER_KEY / max(1, network_size))


class TaskService:
    def __init__(self, env: TaskEnv) -> None:
        self.env = env
        self.cfg = env.tasks
        self.host = env.host
        self.types = TaskTypes()
        self.db = Database(Path(env.data_dir) / DB_FILE)
        self.db.on_failure = env.on_storage_failure  # the journal cannot be written: the node stops, says why
        self.journal = TaskJournal(self.db)
        self.ledger = Ledger(self.db, str(env.peer_id), self.cfg)
        self.pool = ProcessPool(self.cfg.slots)
        self.storage = Storage(env.host, env.data_dir, env.blob_protocol, self.cfg.storage_replicas,
                               self.cfg.max_payload_bytes, env.connection_timeout, env.capabilities, env.book)
        self.worker = Worker(env.host, self.cfg, env.task_protocol, env.capabilities, env.private_network, self.types,
                             self.pool, self.ledger, self.storage, Packages(env.data_dir, self.storage))
        self.dispatcher = Dispatcher(env, self.types, self.db, self.journal, self.ledger, self.worker)
        self.task_protocol = env.task_protocol
        # The task protocol ids this node answers as a worker: 1.1.0 (it verifies batch-signed receipts) unless
        # tasks.receipt_batches is off, and 1.0.0 always.
        self.task_protocols = [env.task_protocol] + (
            [protocol_version(env.task_protocol, RECEIPT_BATCH_VERSION)] if self.cfg.receipt_batches else [])
        self.blob_protocol = env.blob_protocol

    async def start(self, stack: AsyncExitStack) -> None:
        host = self.host
        stack.push_async_callback(self._close)
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)  # on the way out: stop our tasks, then close
        stack.callback(self.worker.stop)  # first of all: end the task streams, which run outside our nursery
        nursery.start_soon(self.db.run)
        self.worker.start(nursery)
        self.dispatcher.start(nursery)
        for proto in self.task_protocols:
            host.set_stream_handler(proto, self.worker.handle_stream)
        host.set_stream_handler(self.blob_protocol, self.storage.handle_stream)
        nursery.start_soon(self._provide_loop)
        log.info("task service up: slots=%d capabilities=%s runnable types=%s", self.cfg.slots,
                 ",".join(self.env.capabilities()) or "-", ",".join(self.types.runnable(self.env.capabilities()))
                 or "-")

    def busy_with(self, peer: Any) -> bool:
        """Whether closing the connection to ``peer`` would break task work: it submits tasks to us over an open
        stream, or we have a task link open to it or tasks in flight there (the connection manager protects it)."""
        pid = str(peer)
        if self.worker.submitters.get(pid):
            return True
        return self.dispatcher.link_pool.in_use(pid)

    async def _close(self) -> None:
        for proto in (*self.task_protocols, self.blob_protocol):
            try:
                self.host.remove_stream_handler(proto)
            except Exception:
                pass
        await self.pool.aclose()
        try:
            self.ledger.flush_reputation(force=True)
        except StorageError:
            pass  # logged when it happened; the journal keeps its last commit
        self.db.close()

    async def _provide_loop(self) -> None:
        """Announce our task capabilities as DHT provider records, so nodes outside our mesh find us."""
        env = self.env
        dht = env.dht
        caps = sorted({t.capability for t in self.types.types.values()} & set(env.capabilities()))
        if not caps or dht is None:
            return
        delays = iter(PROVIDE_SCHEDULE)
        while True:
            await trio.sleep(next(delays, PROVIDE_EVERY) * random.uniform(0.75, 1.25))
            if not self.host.get_connected_peers():
                continue
            if random.random() >= provide_chance(env.book.network_size()):
                continue
            if env.shedder is not None and not env.shedder.allow("dht-refresh"):
                continue
            async with env.transient_dials() if env.transient_dials is not None else nullcontext():
                for cap in caps:
                    with trio.move_on_after(env.connection_timeout):
                        try:
                            await dht.provide(provider_key(env.protocol_version, cap))
                        except Exception as exc:
                            log.debug("DHT provide %s failed: %s", cap, exc)

    # -- the public interface ---------------------------------------------------------------------------------------
    async def submit(self, task_type: str, payload: bytes, timeout_s: float | None = None,
                     max_retries: int | None = None, reward: int | None = None, redundancy: int | None = None) -> str:
        (task_id,) = await self.dispatcher.submit_many([TaskSpec(task_type, payload, timeout_s, max_retries, reward,
                                                                 redundancy)])
        return task_id

    async def submit_many(self, specs: list[TaskSpec]) -> list[str]:
        return await self.dispatcher.submit_many(specs)

    async def wait(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        rec = await self.dispatcher.wait(task_id, timeout)
        if rec is None:
            return {"id": task_id, "state": "unknown", "error": f"no task {task_id}"}
        doc = rec.as_dict()
        doc["result_text"] = rec.result_text()
        return doc

    def get(self, task_id: str) -> TaskRecord | None:
        return self.dispatcher.get(task_id)

    async def wait_record(self, task_id: str, timeout: float | None) -> TaskRecord | None:
        return await self.dispatcher.wait(task_id, timeout)

    def list_tasks(self, state: str | None, limit: int, offset: int) -> list[TaskRecord]:
        active = self.dispatcher.active
        if state in (PENDING, RUNNING):
            recs = sorted((r for r in active.values() if r.state == state and r.group is None),
                          key=lambda r: (r.created, r.id))
            return recs[offset:offset + limit]
        recs = self.journal.list(state, limit, offset)
        return [active.get(r.id, r) if r.state not in FINAL_STATES else r for r in recs]

    def cancel(self, task_id: str) -> TaskRecord | None:
        return self.dispatcher.cancel(task_id)

    def counts(self) -> dict[str, int]:
        doc = self.dispatcher.counts()
        doc["queue_depth"] = self.dispatcher.queue_depth()
        doc["worker_running"] = self.worker.running
        doc["worker_queued"] = self.worker.queued
        doc["worker_executed"] = sum(self.worker.executed.values())
        return doc

    def load(self) -> tuple[int, int, int, float]:
        return self.worker.load()

    def ledger_status(self) -> dict[str, Any]:
        return self.ledger.status()

    def put_blob(self, data: bytes) -> str:
        """Keep ``data`` in this node's blob store (a package for function tasks); its key (sha256) is returned."""
        return self.storage.store.put(data)
