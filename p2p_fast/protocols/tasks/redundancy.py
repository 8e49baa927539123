"""Redundant tasks: one task run on several distinct workers, the majority result accepted, only its workers paid.

A task submitted with ``redundancy: k`` (k >= 2), or picked for a spot check (``tasks.verify_rate``: such a task runs
with k = 2), is not scheduled itself. It gets k *replicas*: ordinary records of the dispatcher, with ids of their own
(the receipts name them; an id starts with the first 20 hex digits of the task's), never journaled, that share one set of workers to avoid, so no two run on the same peer.
A replica retries like any task. When every replica has ended, the results are counted by digest:

* a result returned by a majority (``k // 2 + 1`` workers) and by more workers than any other is accepted: the task
  completes with it, each agreeing worker is paid once (one signed receipt per replica), each disagreeing one is
  noted ``wrong`` in the reputation (which can exclude it, see ``reputation.py``) and not paid;
* otherwise (results disagree, or replicas failed) more replicas are added, up to ``tasks.max_replicas`` workers in
  all, while a capable worker not yet used is known; then the task fails with every result in its error.

Acceptance, payments and penalties happen in one step, so they commit in one transaction with the task. A
submitter that restarts before the decision runs the replicas again (their results were only in memory); nobody
was paid for them. Cost: k executions per task. Guarantee: a wrong result is accepted only if a majority of the
workers that ran it return the same wrong result — k - 1 colluding workers (or one operator with k - 1 identities
among the workers picked) defeat k-redundancy.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Protocol

from p2p_fast.core.config import TasksSection
from p2p_fast.protocols.tasks import metrics
from p2p_fast.protocols.tasks.journal import COMPLETED, FINAL_STATES, RUNNING, Attempt, TaskRecord
from p2p_fast.protocols.tasks.ledger import Ledger, result_digest

log = logging.getLogger(__name__)
MAX_REDUNDANCY = 16
REPLICA_PREFIX = 20
NO_REDUNDANCY = ("storage",)  # side effects of their own (and their own replication): never run twice on purpose


@dataclass
class Group:
    parent: TaskRecord
    bound: int
    used: set[str] = field(default_factory=set)
    replicas: list[TaskRecord] = field(default_factory=list)
    done: bool = False


class ReplicaHost(Protocol):
    """What redundancy needs of the dispatcher that runs the replicas."""

    active: dict[str, TaskRecord]
    ledger: Ledger

    def enqueue(self, rec: TaskRecord, front: bool = False) -> None:
        """Queue ``rec`` for a worker."""

    def cancel(self, task_id: str) -> TaskRecord | None:
        """Cancel a live task."""

    def capable_peers(self, capability: str) -> set[str]:
        """Every worker that could run ``capability`` now."""

    def pay(self, rec: TaskRecord, worker: str, attempt: int, digest: str) -> None:
        """Sign and record the receipt for ``rec``'s result."""

    def finalize(self, rec: TaskRecord) -> None:
        """``rec`` reached its final state."""

    def fail(self, rec: TaskRecord, error: str) -> None:
        """``rec`` fails for good with ``error``."""


class Redundancy:
    def __init__(self, host: ReplicaHost, cfg: TasksSection) -> None:
        self.d = host
        self.cfg = cfg
        self.groups: dict[str, Group] = {}

    @staticmethod
    def check(type_name: str, redundancy: int | None) -> str | None:
        """Why a requested redundancy cannot be accepted, or None."""
        if redundancy is None or redundancy == 1:
            return None
        if not 1 <= redundancy <= MAX_REDUNDANCY:
            return f"redundancy must be within 1..{MAX_REDUNDANCY}"
        if type_name in NO_REDUNDANCY:
            return f"{type_name!r} tasks cannot run redundantly (they have side effects)"
        return None

    def choose(self, type_name: str, inline: bool, asked: int | None) -> int:
        """The redundancy a new task gets: what was asked, else 2 for a random ``verify_rate`` share (spot checks;
        not for the in-process types, which have exact verifiers or side effects)."""
        if asked is not None and asked > 1:
            return asked
        if self.cfg.verify_rate > 0 and not inline and type_name not in NO_REDUNDANCY \
                and random.random() < self.cfg.verify_rate:
            return 2
        return 1

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self, parent: TaskRecord) -> None:
        """Run ``parent`` as replicas (on submission, and again after a restart of this node)."""
        k = parent.redundancy
        g = self.groups[parent.id] = Group(parent, max(k, self.cfg.max_replicas))
        parent.state = RUNNING
        parent.attempts = []
        self._spawn(g, k)

    def _spawn(self, g: Group, n: int) -> None:
        p = g.parent
        now = time.time()
        for _ in range(n):
            # The parent's first 20 hex digits and 12 random ones: a receipt's task id names its redundant task.
            r = TaskRecord(id=p.id[:REPLICA_PREFIX] + secrets.token_hex(6), type=p.type, capability=p.capability, payload=p.payload,
                           reward=p.reward, timeout_s=p.timeout_s, max_retries=p.max_retries, created=p.created,
                           updated=now)
            r.avoid = g.used
            r.group = g
            g.replicas.append(r)
            self.d.active[r.id] = r
            self.d.enqueue(r)

    def cancel(self, parent_id: str) -> None:
        g = self.groups.pop(parent_id, None)
        if g is None:
            return
        g.done = True
        for r in g.replicas:
            if r.state not in FINAL_STATES and r.id in self.d.active:
                self.d.cancel(r.id)

    def replica_final(self, r: TaskRecord) -> None:
        """A replica ended (completed, or failed for good); decide once none is left running."""
        g: Group = r.group
        if g.done or any(x.state not in FINAL_STATES for x in g.replicas):
            return
        self._decide(g)

    # -- the decision -----------------------------------------------------------------------------------------------
    def _decide(self, g: Group) -> None:
        p = g.parent
        k = p.redundancy
        quorum = k // 2 + 1
        by_digest: dict[str, list[TaskRecord]] = {}
        for r in g.replicas:
            if r.state == COMPLETED and r.result is not None:
                by_digest.setdefault(result_digest(r.result), []).append(r)
        ranked = sorted(by_digest.values(), key=len, reverse=True)
        top = len(ranked[0]) if ranked else 0
        if top >= quorum and (len(ranked) == 1 or len(ranked[1]) < top):
            self._accept(g, ranked[0], [r for grp in ranked[1:] for r in grp])
            return
        fresh = self.d.capable_peers(p.capability) - g.used
        room = g.bound - len(g.replicas)
        if room > 0 and fresh:
            more = min(room, len(fresh), max(1, quorum - top))
            log.info("task %s: no majority yet (%s); asking %d more worker(s)", p.id,
                     ", ".join(str(len(x)) for x in ranked) or "no result", more)
            self._spawn(g, more)
            return
        why = "no other capable worker to ask" if room > 0 else f"tasks.max_replicas ({g.bound}) reached"
        self._fail(g, f"no result was returned by a majority ({quorum} of {k}) of the workers: {why}")

    def _accept(self, g: Group, agree: list[TaskRecord], disagree: list[TaskRecord]) -> None:
        p = g.parent
        g.done = True
        self.groups.pop(p.id, None)
        for r in agree:
            self.d.pay(r, r.worker, r.attempts[-1].n, result_digest(r.result or b""))
        for r in disagree:
            self.d.ledger.note(r.worker or "", "wrong")
            metrics.WRONG.labels("redundancy").inc()
            log.warning("task %s: worker %s returned a result %d other worker(s) disagree with: not paid", p.id,
                        r.worker, len(agree))
        metrics.REDUNDANT.labels("accepted" if not disagree else "accepted-outvoted").inc()
        p.attempts = self._merged(g, {r.id for r in disagree})
        p.state = COMPLETED
        p.result = agree[0].result
        p.worker = agree[0].worker
        p.error = None
        p.finished = time.time()
        self.d.finalize(p)

    def _fail(self, g: Group, reason: str) -> None:
        p = g.parent
        g.done = True
        self.groups.pop(p.id, None)
        metrics.REDUNDANT.labels("failed").inc()
        parts = []
        for r in g.replicas:
            if r.state == COMPLETED and r.result is not None:
                text = r.result[:80].decode("utf-8", errors="replace")
                parts.append(f"{r.worker}: {text!r} (sha256 {result_digest(r.result)[:12]})")
            else:
                parts.append(f"{r.worker or '-'}: no result ({r.error})")
        p.attempts = self._merged(g, set())
        self.d.fail(p, f"{reason}; results: " + "; ".join(parts))

    @staticmethod
    def _merged(g: Group, outvoted: set[str]) -> list[Attempt]:
        """The parent's attempts: every replica's, numbered in order (an outvoted result shows as ``outvoted``)."""
        out: list[Attempt] = []
        for r in g.replicas:
            for a in r.attempts:
                b = Attempt(len(out) + 1, a.worker, a.started, a.ended, a.outcome, a.reason, a.counted)
                if r.id in outvoted and a.outcome == "ok":
                    b.outcome, b.reason = "outvoted", "its result disagrees with the majority (not paid)"
                out.append(b)
        return out
