"""Paying workers: sign a receipt for each verified result, record it, and get it to the worker.

A receipt is signed and recorded as spent in the same transaction as the task's completion; it goes out only after
that commit (a crash in between must not leave a worker holding a receipt the ledger does not know). For a worker
that takes batch signatures (its stream speaks task protocol 1.1.0, ``Link.batch_receipts``) the receipts of one
commit are signed together, once, by a before-commit hook (``ledger.sign_receipt_batch``): one Ed25519 signature
per worker per commit instead of one per task, and the worker verifies it once. Receipts go
out in small batches on the worker's task stream, off the critical path of the next request. One that may not
have been read (the stream broke within ``RESEND_WINDOW_S``) or had no stream is sent again when the next stream to
that worker opens; a live worker owed receipts but given no new task gets a stream of its own every
``REDELIVER_EVERY`` seconds.
"""

from __future__ import annotations

import time
from typing import Callable

import trio
from libp2p.crypto.keys import PrivateKey

from p2p_fast.protocols.messages import TaskReceipt
from p2p_fast.protocols.tasks.journal import Database, TaskRecord
from p2p_fast.protocols.tasks.ledger import RESEND_WINDOW_S, Ledger, sign_receipt, sign_receipt_batch
from p2p_fast.protocols.tasks.links import Link, LinkPool
from p2p_fast.protocols.tasks.wire import FrameWriter

RECEIPT_BATCH_S = 0.02
RECEIPT_BATCH_MAX = 256
REDELIVER_EVERY = 5.0  # how often receipts still owed to live workers get a stream of their own
SIGN_BATCH_MAX = 1024  # receipts under one batch signature (a path of at most 10 hashes each)


class Receipts:
    """Receipts this node issues as a submitter, from signing to delivery."""

    def __init__(self, own_id: str, key: PrivateKey, own_key_bytes: bytes, ledger: Ledger, db: Database,
                 links: LinkPool, local: Link, deliver_local: Callable[[TaskReceipt], None],
                 is_live: Callable[[str], bool]) -> None:
        self.own_id = own_id
        self.key = key
        self.own_key_bytes = own_key_bytes
        self.ledger = ledger
        self.db = db
        self.links = links
        self.local = local
        self.deliver_local = deliver_local
        self.is_live = is_live
        self.queue: list[tuple[Link, TaskReceipt]] = []
        self._wake = trio.Event()
        self.unsigned: dict[str, tuple[Link, list[TaskReceipt]]] = {}  # per worker, signed at the next commit
        db.before_commit(self.sign_pending)

    def pay(self, rec: TaskRecord, worker: str, attempt: int, digest: str) -> None:
        """Sign and record the receipt for ``rec``'s result; it goes out to the worker after the commit."""
        receipt = TaskReceipt(rec.id, attempt, self.own_id, worker, rec.reward, digest, rec.finished or time.time(),
                              b"")
        self.ledger.note(worker, "success")
        link = self.local if worker == self.own_id else self.links.link_for(worker)
        if link.batch_receipts:
            self.unsigned.setdefault(worker, (link, []))[1].append(receipt)
            self.db.touch()  # the commit that makes the completion durable signs and records it first
            return
        signed = sign_receipt(receipt, self.key)
        self.ledger.record_spent(signed, self.own_key_bytes)
        self.db.after_commit(lambda: self.deliver(link, signed))

    def sign_pending(self) -> None:
        """Before a commit: sign what was paid since the last one, one batch per worker, and record it as spent."""
        if not self.unsigned:
            return
        pending, self.unsigned = self.unsigned, {}
        for link, receipts in pending.values():
            for i in range(0, len(receipts), SIGN_BATCH_MAX):
                signed = sign_receipt_batch(receipts[i:i + SIGN_BATCH_MAX], self.key)
                self.ledger.record_spent_many(signed, self.own_key_bytes)
                self.db.after_commit(lambda link=link, signed=signed: self.deliver_many(link, signed))

    def deliver(self, link: Link, receipt: TaskReceipt) -> None:
        """Receipts go out in batches (``RECEIPT_BATCH_S``): off the critical path of the next task."""
        self.queue.append((link, receipt))
        self._wake.set()

    def deliver_many(self, link: Link, receipts: list[TaskReceipt]) -> None:
        self.queue.extend((link, r) for r in receipts)
        self._wake.set()

    def send_owed(self, link: Link, writer: FrameWriter) -> None:
        """A stream to the worker opened: every receipt still owed to it goes first."""
        owed = self.ledger.undelivered(link.peer_id)
        if owed:
            now = time.monotonic()
            for receipt in owed:
                writer.send(receipt)
                link.receipts_sent.append((now, receipt.task_id))
            self.ledger.mark_delivered([r.task_id for r in owed])

    def stream_lost(self, link: Link) -> None:
        """Receipts sent on a stream that broke were perhaps never read: send them again on the next one."""
        if link.receipts_sent:
            self.ledger.mark_undelivered([t for _, t in link.receipts_sent])
            link.receipts_sent.clear()

    async def run_sender(self) -> None:
        while True:
            if not self.queue:
                await self._wake.wait()
                self._wake = trio.Event()
            await trio.sleep(RECEIPT_BATCH_S)
            # Bounded batches: a burst of thousands must not sit in front of new requests on the streams, nor make
            # a worker verify thousands of signatures before it reads its next request.
            batch, self.queue = self.queue[:RECEIPT_BATCH_MAX], self.queue[RECEIPT_BATCH_MAX:]
            delivered = []
            now = time.monotonic()
            for link, receipt in batch:
                if link.local:
                    self.deliver_local(receipt)
                elif link.writable:
                    assert link.writer is not None
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

    async def run_redeliver(self) -> None:
        """Receipts owed to a live worker that gets no new task would wait forever for a stream: open one."""
        while True:
            await trio.sleep(REDELIVER_EVERY)
            now = time.monotonic()
            for worker in self.ledger.owed_workers():
                if not self.is_live(worker):
                    continue
                link = self.links.link_for(worker)
                if link.idle(now) and self.links.nursery is not None:
                    self.links.open(link)
