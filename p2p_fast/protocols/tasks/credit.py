"""Bilateral credit: what each peer did for this node against what this node did for it, and who is served first.

Every node keeps, per peer, one balance in credits (the receipt amounts: a task served counts at least 1):

* it starts at ``tasks.initial_credit`` the first time the peer asks for anything (the grant that lets a network
  start: a stranger can be served before it had a chance to work);
* it goes down by a task's reward when this node, as a worker, answers that peer's task with a result — counted
  when the result is sent, so a submitter that withholds its receipts gains nothing;
* it goes up by the reward when this node, as a submitter, pays that peer a receipt for a result it verified —
  its own signed receipt, so nothing the peer claims is trusted;
* a negative balance (a debt) halves every ``tasks.debt_decay`` seconds, so a refused peer is served again in time.

No global ledger is needed and none could be gamed: a balance moves only by work this node did or received itself.
Identities vouching for each other change nothing here (work done for a third peer does not count), so a new
identity (a Sybil) is worth the grant and no more. Under contention the worker's slots go to queued requests in
order of balance (:class:`PriorityGate`); a peer whose debt, with what it has in flight, has reached
``tasks.debt_limit`` is answered ``busy: credit`` (``debt_limit`` 0: never refused). Reached, not "would pass with
this task": a debt at the limit then only has to fade a little for the next task, whatever the limit and the cost.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from typing import Any, Callable

import trio

from p2p_fast.core.config import TasksSection
from p2p_fast.protocols.tasks import metrics
from p2p_fast.protocols.tasks.dirty import DirtyPeers
from p2p_fast.protocols.tasks.journal import Database

log = logging.getLogger(__name__)
CREDIT_REFUSAL = "busy: credit"  # the reason a refused request's error starts with; the dispatcher looks for it
TOP_N = 10  # peers in the per-peer credit gauge (the largest debts and credits)
SCHEMA = """
CREATE TABLE IF NOT EXISTS credit (
    peer_id TEXT PRIMARY KEY,
    balance REAL NOT NULL,
    updated REAL NOT NULL,
    served INTEGER NOT NULL DEFAULT 0,
    served_credits INTEGER NOT NULL DEFAULT 0,
    received INTEGER NOT NULL DEFAULT 0,
    received_credits INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0
);
"""


def task_cost(reward: int) -> int:
    """What one task counts for in a balance: its reward, at least 1 (a reward of 0 is not free service)."""
    return max(1, int(reward))


class Account:
    __slots__ = ("balance", "updated", "served", "served_credits", "received", "received_credits", "refused",
                 "in_flight")

    def __init__(self, balance: float, updated: float, served: int = 0, served_credits: int = 0, received: int = 0,
                 received_credits: int = 0, refused: int = 0) -> None:
        self.balance = balance
        self.updated = updated
        self.served = served
        self.served_credits = served_credits
        self.received = received
        self.received_credits = received_credits
        self.refused = refused
        self.in_flight = 0  # credits of this peer's tasks running or queued here (not persisted)


class CreditBook:
    """Per-peer balances of this node, persisted in the task database (see the module docstring)."""

    def __init__(self, db: Database, own_id: str, cfg: TasksSection, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.conn = db.conn
        self.own_id = own_id
        self.initial = float(cfg.initial_credit)
        self.limit = float(cfg.debt_limit)
        self.half_life = float(cfg.debt_decay)
        self.clock = clock
        self.conn.executescript(SCHEMA)
        self.accounts: dict[str, Account] = {
            p: Account(float(b), float(u), int(s), int(sc), int(r), int(rc), int(rf)) for p, b, u, s, sc, r, rc, rf in
            self.conn.execute("SELECT peer_id, balance, updated, served, served_credits, received, "
                              "received_credits, refused FROM credit")}
        self.dirty = DirtyPeers()  # changed since the last flush

    # -- balances ---------------------------------------------------------------------------------------------------
    def _account(self, peer: str) -> Account:
        acc = self.accounts.get(peer)
        now = self.clock()
        if acc is None:
            acc = self.accounts[peer] = Account(self.initial, now)
            self.dirty.touch(peer)
            return acc
        if acc.balance < 0 and self.half_life > 0 and now > acc.updated:
            acc.balance *= 0.5 ** ((now - acc.updated) / self.half_life)
            if acc.balance > -1e-6:
                acc.balance = 0.0
        acc.updated = max(acc.updated, now)
        return acc

    def balance(self, peer: str) -> float:
        return self._account(peer).balance

    def served(self, peer: str, reward: int) -> None:
        """This node (as a worker) sent ``peer`` a result."""
        self._served(self._account(peer), peer, task_cost(reward))

    def _served(self, acc: Account, peer: str, cost: int) -> None:
        acc.balance -= cost
        acc.served += 1
        acc.served_credits += cost
        self.dirty.touch(peer)
        self.db.touch(lazy=True)

    def received(self, peer: str, amount: int) -> None:
        """This node (as a submitter) paid ``peer`` for a verified result."""
        acc = self._account(peer)
        cost = task_cost(amount)
        acc.balance += cost
        acc.received += 1
        acc.received_credits += cost
        self.dirty.touch(peer)
        self.db.touch(lazy=True)

    # -- service ----------------------------------------------------------------------------------------------------
    def admit(self, peer: str, reward: int) -> str | None:
        """A request from ``peer`` arrived: None when it may run (its cost is held as in flight until ``settle``),
        else the refusal's text (starting with ``CREDIT_REFUSAL``)."""
        acc = self._account(peer)
        cost = reward if reward > 1 else 1
        if self.limit > 0 and acc.balance - acc.in_flight <= -self.limit:
            acc.refused += 1
            self.dirty.touch(peer)
            self.db.touch(lazy=True)
            metrics.REFUSED.labels("credit").inc()
            fade = (f"or wait for the debt to halve every {self.half_life:g} s" if self.half_life > 0
                    else "debts never fade here")
            owed = max(0.0, -acc.balance)
            return (f"{CREDIT_REFUSAL}: {peer} owes this worker {owed:.0f} credit(s) with {acc.in_flight} in "
                    f"flight, beyond its grant of {self.initial:.0f}; tasks.debt_limit is {self.limit:.0f}: work "
                    f"for this worker, {fade}")
        acc.in_flight += cost
        return None

    def settle(self, peer: str, reward: int, ok: bool) -> None:
        """An admitted request ended; ``ok``: its result was sent (the cost becomes debt)."""
        acc = self._account(peer)
        cost = reward if reward > 1 else 1  # task_cost, inlined: this runs for every request a worker answers
        acc.in_flight = max(0, acc.in_flight - cost)
        if ok:
            self._served(acc, peer, cost)

    def priority(self, peer: str) -> float:
        """Order of service under contention: the node itself first, then by balance."""
        return math.inf if peer == self.own_id else self.balance(peer)

    # -- persistence and views --------------------------------------------------------------------------------------
    def flush(self) -> None:
        if not self.dirty:
            return
        rows = []
        for p in self.dirty:
            a = self.accounts[p]
            rows.append((p, a.balance, a.updated, a.served, a.served_credits, a.received, a.received_credits,
                         a.refused))
        self.conn.executemany(
            "INSERT INTO credit (peer_id, balance, updated, served, served_credits, received, received_credits, "
            "refused) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(peer_id) DO UPDATE SET balance=excluded.balance, "
            "updated=excluded.updated, served=excluded.served, served_credits=excluded.served_credits, "
            "received=excluded.received, received_credits=excluded.received_credits, refused=excluded.refused",
            rows)
        self.dirty.clear()
        self.db.touch(lazy=True)
        self.publish()

    def publish(self) -> None:
        """The per-peer gauge holds the ``TOP_N`` largest balances by size (both signs): bounded, whatever the
        number of peers."""
        ranked = sorted(self.accounts.items(), key=lambda kv: -abs(kv[1].balance))[:TOP_N]
        metrics.CREDIT_BALANCE.clear()
        for peer, acc in ranked:
            metrics.CREDIT_BALANCE.labels(peer).set(round(acc.balance, 3))

    def doc(self) -> dict[str, Any]:
        peers = {}
        for peer in sorted(self.accounts):
            a = self._account(peer)
            peers[peer] = {"balance": round(a.balance, 3), "served": a.served, "served_credits": a.served_credits,
                           "received": a.received, "received_credits": a.received_credits, "refused": a.refused,
                           "in_flight": a.in_flight}
        return {"initial_credit": self.initial, "debt_limit": self.limit, "debt_decay": self.half_life,
                "peers": peers}


class GaveWay(Exception):
    """A waiting request was pushed out of a full queue by one of higher priority."""


class PriorityGate:
    """``slots`` permits handed out to waiters highest priority first (FIFO among equals): trio's Semaphore would
    serve them in arrival order, which lets a peer that only consumes crowd out one that works. With the queue full,
    a newcomer of higher priority takes the place of the lowest waiter (``give_way``), which gets :class:`GaveWay`.

    A waiter may bring a ``job``: then a permit holder may ``take`` it along (highest priority first, as a permit
    would), to run in the holder's slot after its own work -- a batch. A waiter taken that way holds no permit
    (``acquire`` returns False) and releases nothing."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self.waiting = 0  # waiters not yet granted nor gone
        self._waiters: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: float, job: Any = None) -> bool:
        """Wait for a permit (True), or until a permit holder took ``job`` along (False)."""
        await trio.lowlevel.checkpoint_if_cancelled()  # before taking a permit: a cancellation after would leak it
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return True
        entry: dict[str, Any] = {"event": trio.Event(), "granted": False, "gone": False, "bumped": False,
                                 "priority": priority, "job": job, "taken": False}
        heapq.heappush(self._waiters, (-priority, next(self._seq), entry))
        self.waiting += 1
        try:
            await entry["event"].wait()
            if entry["bumped"]:
                raise GaveWay()
        except GaveWay:
            raise
        except BaseException:
            if entry["granted"]:
                self.release()  # granted while being cancelled: pass the permit on
            elif not entry["gone"]:  # (a waiter that gave way or was taken was already counted out)
                entry["gone"] = True  # left in the heap, skipped when it comes up
                self.waiting -= 1
            raise
        return not entry["taken"]

    def take(self, limit: int, fits: Callable[[Any], bool]) -> list[Any]:
        """Up to ``limit`` jobs of waiters, highest priority first, for the caller (a permit holder) to run in its
        slot; stops at the first waiter without a job or whose job does not ``fit`` (it waits for a permit of its
        own, and keeps its place: nobody behind it is taken before it)."""
        jobs: list[Any] = []
        while self._waiters and len(jobs) < limit:
            _, _, entry = self._waiters[0]
            if entry["gone"]:
                heapq.heappop(self._waiters)
                continue
            if entry["job"] is None or not fits(entry["job"]):
                break
            heapq.heappop(self._waiters)
            entry["taken"] = entry["gone"] = True
            self.waiting -= 1
            entry["event"].set()
            jobs.append(entry["job"])
        return jobs

    def give_way(self, priority: float) -> bool:
        """Push out the lowest-priority waiter (the latest among equals) if it ranks below ``priority``."""
        lowest: dict[str, Any] | None = None
        lowest_key: tuple[float, int] | None = None
        for neg, seq, entry in self._waiters:
            if entry["gone"]:
                continue
            key = (neg, seq)
            if lowest_key is None or key > lowest_key:
                lowest, lowest_key = entry, key
        if lowest is None or lowest["priority"] >= priority:
            return False
        lowest["bumped"] = lowest["gone"] = True
        self.waiting -= 1
        lowest["event"].set()
        return True

    def release(self) -> None:
        while self._waiters:
            _, _, entry = heapq.heappop(self._waiters)
            if entry["gone"]:
                continue
            entry["granted"] = True
            entry["gone"] = True
            self.waiting -= 1
            entry["event"].set()
            return
        self.free += 1
