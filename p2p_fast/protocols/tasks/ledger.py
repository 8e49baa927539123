"""Rewards: signed receipts, the credit ledger and reputation.

For every verified result the submitter signs a :class:`TaskReceipt` with its node key and records the credit as
``spent``; the worker checks the signature against the submitter's public key and records it as ``earned``. Each
entry keeps the signature and the signer's public key, so anybody can re-check the whole ledger
(:meth:`Ledger.verify_all`), and the primary key ``(task_id, submitter, direction)`` makes counting one task twice
impossible, whatever arrives late or twice. Reputation (``reputation.py``) is what the submitter learned
first-hand about its workers; the bilateral credit balances (``credit.py``) are what this node did for each peer and
that peer for it, and decide whom a busy worker serves.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from typing import Any, Callable

from libp2p.crypto.keys import PrivateKey, PublicKey
from libp2p.crypto.serialization import deserialize_public_key

from p2p_fast._ext import encode_uvarint
from p2p_fast.core.config import TasksSection
from p2p_fast.protocols.messages import TaskReceipt
from p2p_fast.protocols.tasks import merkle, metrics
from p2p_fast.protocols.tasks.credit import CreditBook
from p2p_fast.protocols.tasks.journal import Database
from p2p_fast.protocols.tasks.reputation import Reputation

log = logging.getLogger(__name__)
RECEIPT_DOMAIN = b"p2p-fast/task-receipt/1\x00"
# A receipt sent this recently before its stream broke, or before the node died, may never have been read: it sat in
# the stream's write queue, or in a socket that a reset (kill -9) discarded. Such receipts are owed again: when the
# stream breaks (the dispatcher), and on start-up for those issued this long before the newest one (which stands in
# for the time of death). The worker credits a receipt once however often it comes.
RESEND_WINDOW_S = 10.0
# Batch signatures (sign_receipt_batch): their own domain tag, so neither form's signed bytes can pass for the other.
BATCH_DOMAIN = b"p2p-fast/task-receipt-batch/1\x00"
BATCH_MAGIC = b"MRK1"
_BATCH_HEAD = struct.Struct(">IIH")  # index, count, signature length
_COUNT = struct.Struct(">I")
FLUSH_EVERY_S = 0.5


def result_digest(result: bytes) -> str:
    return hashlib.sha256(result).hexdigest()


_DOUBLE = struct.Struct(">d")
_RECEIPT_HEAD = bytes((1, 6))  # the pre-protobuf codec's version and type bytes: see receipt_bytes


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return encode_uvarint(len(raw)) + raw


def receipt_bytes(receipt: TaskReceipt) -> bytes:
    """What the submitter signs: a domain tag and a canonical encoding of the receipt's fields 1-7.

    Not the protobuf bytes: protobuf does not promise one encoding per message (field order, unknown fields, a
    newer node's extra fields), and a worker must rebuild exactly the signed bytes from the fields it knows, in any
    version, and from its ledger rows years later. So the fields are written by this function alone, in a fixed
    order and form -- the layout of the codec before protobuf (version 1, type 6; varint-length UTF-8 strings,
    varint integers, big-endian IEEE-754 double, an empty signature), which also keeps every receipt signed before
    the switch verifiable. Fields added to ``TaskReceipt`` later are not covered; signing one needs a new
    ``RECEIPT_DOMAIN`` and layout (docs/protocol.md, "Receipts")."""
    r = receipt
    return b"".join((RECEIPT_DOMAIN, _RECEIPT_HEAD, _text(r.task_id), encode_uvarint(int(r.attempt)),
                     _text(r.submitter), _text(r.worker), encode_uvarint(int(r.reward)), _text(r.result_digest),
                     _DOUBLE.pack(float(r.issued_at)), b"\x00"))


def sign_receipt(receipt: TaskReceipt, key: PrivateKey) -> TaskReceipt:
    r = receipt
    return TaskReceipt(r.task_id, r.attempt, r.submitter, r.worker, r.reward, r.result_digest, r.issued_at,
                       key.sign(receipt_bytes(r)))


def _batch_message(count: int, root: bytes) -> bytes:
    return BATCH_DOMAIN + _COUNT.pack(count) + root


def sign_receipt_batch(receipts: list[TaskReceipt], key: PrivateKey) -> list[TaskReceipt]:
    """One Ed25519 signature for all of ``receipts`` (merkle.py); each comes back carrying it with its own path, in
    its ``signature`` field: ``BATCH_MAGIC || uint32 index || uint32 count || uint16 n || signature (n bytes) ||
    path``, where the
    signature covers ``BATCH_DOMAIN || uint32 count || root`` and the leaves are ``receipt_bytes`` of each receipt.
    Only for workers that verify this form (they speak ``RECEIPT_BATCH_VERSION`` of the task protocol)."""
    root, paths = merkle.build([merkle.leaf_hash(receipt_bytes(r)) for r in receipts])
    sig = key.sign(_batch_message(len(receipts), root))
    n = len(receipts)
    return [TaskReceipt(r.task_id, r.attempt, r.submitter, r.worker, r.reward, r.result_digest, r.issued_at,
                        BATCH_MAGIC + _BATCH_HEAD.pack(i, n, len(sig)) + sig + b"".join(path))
            for i, (r, path) in enumerate(zip(receipts, paths))]


class _VerifiedRoots:
    """Batch roots whose signature was checked, per signer key: the other receipts of the batch only hash."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.seen: dict[tuple[bytes, bytes], None] = {}

    def check(self, key: PublicKey, message: bytes, sig: bytes) -> bool:
        k = (key.to_bytes(), message)
        if k in self.seen:
            return True
        try:
            ok = bool(key.verify(message, sig))
        except Exception:
            return False
        if ok:
            if len(self.seen) >= self.size:
                self.seen.pop(next(iter(self.seen)))
            self.seen[k] = None
        return ok


_ROOTS = _VerifiedRoots()


def verify_receipt(receipt: TaskReceipt, key: PublicKey) -> bool:
    """Either form: a batch signature with this receipt's path (``BATCH_MAGIC`` first), or a signature of this
    receipt alone (any other bytes: 64 for Ed25519 keys, DER for secp256k1, ...)."""
    sig = receipt.signature
    if sig.startswith(BATCH_MAGIC) and _verify_in_batch(receipt, key):
        return True
    try:
        return bool(key.verify(receipt_bytes(receipt), sig))
    except Exception:
        return False


def _verify_in_batch(receipt: TaskReceipt, key: PublicKey) -> bool:
    sig = receipt.signature
    head = len(BATCH_MAGIC) + _BATCH_HEAD.size
    if len(sig) < head:
        return False
    index, count, n = _BATCH_HEAD.unpack_from(sig, len(BATCH_MAGIC))
    if not n or len(sig) < head + n or (len(sig) - head - n) % merkle.HASH_LEN:
        return False
    path = [sig[i:i + merkle.HASH_LEN] for i in range(head + n, len(sig), merkle.HASH_LEN)]
    root = merkle.root_from_path(merkle.leaf_hash(receipt_bytes(receipt)), index, count, path)
    if root is None:
        return False
    return _ROOTS.check(key, _batch_message(count, root), sig[head:head + n])


class Ledger:
    """Credits earned (as a worker) and spent (as a submitter), plus reputation of the workers we used."""

    def __init__(self, db: Database, own_id: str, cfg: TasksSection | None = None) -> None:
        self.db = db
        self.conn = db.conn
        self.own_id = own_id
        self.earned = self.spent = self.n_earned = self.n_spent = 0
        for direction, total, count in self.conn.execute(
                "SELECT direction, COALESCE(SUM(amount), 0), COUNT(*) FROM ledger GROUP BY direction"):
            if direction == "earned":
                self.earned, self.n_earned = int(total), int(count)
            else:
                self.spent, self.n_spent = int(total), int(count)
        if cfg is None:
            cfg = TasksSection()
        self.rep = Reputation(db, cfg)
        self.credit = CreditBook(db, own_id, cfg)
        self._flushed = 0.0
        # The gauge's children bound once: ``labels()`` takes a lock and checks the names on every
        # call (~0.8 µs each, three per receipt).
        self._gauges = tuple(metrics.CREDITS.labels(kind) for kind in ("earned", "spent", "balance"))
        self._owe_last_moments()
        self._publish_gauges()

    def _owe_last_moments(self) -> None:
        """See ``RESEND_WINDOW_S``."""
        (newest,) = self.conn.execute(
            "SELECT MAX(issued_at) FROM ledger WHERE direction='spent' AND submitter=?", (self.own_id,)).fetchone()
        if newest is None:
            return
        cur = self.conn.execute(
            "UPDATE ledger SET delivered=0 WHERE direction='spent' AND submitter=? AND delivered=1 AND worker<>? "
            "AND issued_at>=?", (self.own_id, self.own_id, float(newest) - RESEND_WINDOW_S))
        if cur.rowcount:
            log.info("%d receipt(s) sent just before the last stop will be sent again", cur.rowcount)
            self.db.touch(lazy=True)

    def _publish_gauges(self) -> None:
        earned, spent, balance = self._gauges
        earned.set(self.earned)
        spent.set(self.spent)
        balance.set(self.earned - self.spent)

    # -- entries ----------------------------------------------------------------------------------------------------
    def record_spent(self, receipt: TaskReceipt, own_key: bytes) -> bool:
        """The submitter's side; False when this task was already paid (it never is paid twice)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO ledger (task_id, submitter, worker, direction, amount, attempt, result_digest, "
            "issued_at, signature, submitter_key, delivered) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
            (receipt.task_id, receipt.submitter, receipt.worker, "spent", receipt.reward, receipt.attempt,
             receipt.result_digest, receipt.issued_at, receipt.signature, own_key))
        if cur.rowcount != 1:
            return False
        self.db.touch()
        self.spent += receipt.reward
        self.n_spent += 1
        if receipt.worker != self.own_id:
            self.credit.received(receipt.worker, receipt.reward)
        self._publish_gauges()
        return True

    def record_spent_many(self, receipts: list[TaskReceipt], own_key: bytes) -> int:
        """``record_spent`` for many (one statement); returns how many were new (a task already paid is skipped)."""
        if not receipts:
            return 0
        sql = ("INSERT OR IGNORE INTO ledger (task_id, submitter, worker, direction, amount, attempt, result_digest, "
               "issued_at, signature, submitter_key, delivered) VALUES (?,?,?,'spent',?,?,?,?,?,?,0)")
        rows = [(r.task_id, r.submitter, r.worker, r.reward, r.attempt, r.result_digest, r.issued_at, r.signature,
                 own_key) for r in receipts]
        (last,) = self.conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM ledger").fetchone()
        before = self.conn.total_changes
        self.conn.executemany(sql, rows)
        if self.conn.total_changes - before == len(rows):
            new = receipts
        else:  # some task was paid before (never, unless a bug pays twice): the rows written now are the new ones
            fresh = {t for (t,) in self.conn.execute(
                "SELECT task_id FROM ledger WHERE rowid > ? AND direction='spent' AND submitter=?",
                (last, self.own_id))}
            new = [r for r in receipts if r.task_id in fresh]
        if new:
            self.db.touch()
        for r in new:
            self.spent += r.reward
            self.n_spent += 1
            if r.worker != self.own_id:
                self.credit.received(r.worker, r.reward)
        self._publish_gauges()
        return len(new)

    def record_earned(self, receipt: TaskReceipt, submitter_key: PublicKey) -> str | None:
        """The worker's side: check and credit a receipt. Returns why it was refused, or None when credited (or
        already credited before: a receipt delivered twice is still one credit)."""
        if receipt.worker != self.own_id:
            return "receipt names another worker"
        if not verify_receipt(receipt, submitter_key):
            return "bad signature"
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO ledger (task_id, submitter, worker, direction, amount, attempt, result_digest, "
            "issued_at, signature, submitter_key, delivered) VALUES (?,?,?,?,?,?,?,?,?,?,1)",
            (receipt.task_id, receipt.submitter, receipt.worker, "earned", receipt.reward, receipt.attempt,
             receipt.result_digest, receipt.issued_at, receipt.signature, submitter_key.serialize()))
        if cur.rowcount == 1:
            self.db.touch()
            self.earned += receipt.reward
            self.n_earned += 1
            self._publish_gauges()
        else:
            metrics.RECEIPTS_DUPLICATE.inc()
        return None

    def mark_delivered(self, task_ids: list[str]) -> None:
        self.conn.executemany("UPDATE ledger SET delivered=1 WHERE task_id=? AND submitter=? AND direction='spent'",
                              [(t, self.own_id) for t in task_ids])
        self.db.touch(lazy=True)  # lost in a crash, the receipts are only sent again (a no-op for the worker)

    def mark_undelivered(self, task_ids: list[str]) -> None:
        """Send these receipts again with the next stream (they went out on one that broke soon after)."""
        self.conn.executemany("UPDATE ledger SET delivered=0 WHERE task_id=? AND submitter=? AND direction='spent'",
                              [(t, self.own_id) for t in task_ids])
        self.db.touch(lazy=True)

    def owed_workers(self) -> list[str]:
        """Workers we paid whose receipts have not gone out yet."""
        return [w for (w,) in self.conn.execute(
            "SELECT DISTINCT worker FROM ledger WHERE direction='spent' AND delivered=0 AND worker<>?",
            (self.own_id,))]

    def undelivered(self, worker: str, limit: int = 10000) -> list[TaskReceipt]:
        rows = self.conn.execute(
            "SELECT task_id, attempt, submitter, worker, amount, result_digest, issued_at, signature FROM ledger "
            "WHERE direction='spent' AND delivered=0 AND worker=? LIMIT ?", (worker, limit)).fetchall()
        return [TaskReceipt(t, int(a), s, w, int(m), d, float(i), bytes(sig)) for t, a, s, w, m, d, i, sig in rows]

    def entries(self, limit: int = 100, direction: str | None = None) -> list[dict[str, Any]]:
        q = ("SELECT task_id, submitter, worker, direction, amount, attempt, result_digest, issued_at, signature "
             "FROM ledger")
        args: tuple[Any, ...] = ()
        if direction:
            q += " WHERE direction=?"
            args = (direction,)
        q += " ORDER BY issued_at DESC LIMIT ?"
        rows = self.conn.execute(q, args + (limit,)).fetchall()
        return [{"task_id": t, "submitter": s, "worker": w, "direction": d, "amount": a, "attempt": n,
                 "result_digest": g, "issued_at": i, "signature": bytes(sig).hex()}
                for t, s, w, d, a, n, g, i, sig in rows]

    def by_peer(self) -> dict[str, dict[str, int]]:
        """Credits per counterpart: ``paid`` to it as our worker, ``received`` from it as our submitter."""
        out: dict[str, dict[str, int]] = {}
        for peer, direction, total, n in self.conn.execute(
                "SELECT CASE direction WHEN 'spent' THEN worker ELSE submitter END, direction, SUM(amount), COUNT(*) "
                "FROM ledger GROUP BY 1, 2"):
            doc = out.setdefault(peer, {"paid": 0, "received": 0, "tasks_paid": 0, "tasks_received": 0})
            key = "paid" if direction == "spent" else "received"
            doc[key] += int(total or 0)
            doc["tasks_" + key] += int(n)
        return out

    def verify_all(self) -> dict[str, int]:
        """Re-check every entry's signature with the key stored beside it."""
        ok = bad = 0
        for t, a, s, w, m, d, i, sig, key in self.conn.execute(
                "SELECT task_id, attempt, submitter, worker, amount, result_digest, issued_at, signature, "
                "submitter_key FROM ledger"):
            receipt = TaskReceipt(t, int(a), s, w, int(m), d, float(i), bytes(sig))
            try:
                pub = deserialize_public_key(bytes(key))
            except Exception:
                bad += 1
                continue
            if verify_receipt(receipt, pub):
                ok += 1
            else:
                bad += 1
        metrics.LEDGER_BAD.set(bad)
        return {"verified": ok, "bad": bad}

    # -- reputation and credit -------------------------------------------------------------------------------------
    def note(self, worker: str, outcome: str) -> None:
        """outcome: success, failure, timeout or wrong."""
        self.rep.note(worker, outcome)

    def banned(self, worker: str) -> bool:
        return self.rep.banned(worker)

    def pending(self) -> bool:
        """Reputation or credit changes that :meth:`flush_reputation` has not written yet."""
        return bool(self.rep.dirty or self.credit.dirty)

    def on_change(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when reputation or credit changes while nothing was pending (the writer may be asleep)."""
        self.rep.dirty.on_dirty = self.credit.dirty.on_dirty = wake

    def flush_reputation(self, force: bool = False) -> None:
        """Reputation and credit counters: written lazily, at most every ``FLUSH_EVERY_S`` unless ``force`` (a crash
        may lose the last second of them). The dispatcher calls this every scheduling round: thousands a second
        under load, each a write and a re-publish of the per-peer gauges, were ~5 % of a busy submitter's CPU."""
        now = time.monotonic()
        if not force and now - self._flushed < FLUSH_EVERY_S:
            return
        self._flushed = now
        self.rep.flush()
        self.credit.flush()

    def score(self, worker: str) -> float:
        return self.rep.score(worker)

    def status(self) -> dict[str, Any]:
        return {
            "balance": self.earned - self.spent,
            "earned": self.earned,
            "spent": self.spent,
            "receipts_earned": self.n_earned,
            "receipts_spent": self.n_spent,
            "workers_rated": len(self.rep.peers),
            "reputation": self.rep.brief(),
        }

    def reputation_doc(self) -> dict[str, dict[str, Any]]:
        return self.rep.doc()
