"""Reputation of the workers this node used: first-hand, persisted, fading, and able to exclude a cheat.

Per worker the submitter counts successes, failures, timeouts and wrong results (a result its task type's verifier
refused, or one outvoted by other workers on a redundant task). Every count halves every
``tasks.reputation_half_life`` seconds, so a worker's score is about its recent behaviour. The score, 0..1 with 0.5
for a stranger, is ``(successes + 1) / (successes + failures + 2 x timeouts + 4 x wrong + 2)``: the scheduler adds
``1 - score`` to a worker's cost. A worker whose (decayed) wrong results reach ``tasks.ban_after`` is excluded from
assignment for ``tasks.ban_duration`` seconds; the exclusion is persisted, so a restart does not forgive it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from p2p_fast.core.config import TasksSection
from p2p_fast.protocols.tasks import metrics
from p2p_fast.protocols.tasks.dirty import DirtyPeers
from p2p_fast.protocols.tasks.journal import Database

OUTCOMES = {"success": 0, "failure": 1, "timeout": 2, "wrong": 3}
_COLUMNS = (("wrong", "REAL NOT NULL DEFAULT 0"), ("updated", "REAL NOT NULL DEFAULT 0"),
            ("banned_until", "REAL NOT NULL DEFAULT 0"))


class Reputation:
    def __init__(self, db: Database, cfg: TasksSection, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.conn = db.conn
        self.half_life = float(cfg.reputation_half_life)
        self.ban_after = float(cfg.ban_after)
        self.ban_duration = float(cfg.ban_duration)
        self.clock = clock
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(reputation)")}
        for name, decl in _COLUMNS:  # journals written before these columns existed
            if name not in have:
                self.conn.execute(f"ALTER TABLE reputation ADD COLUMN {name} {decl}")
        self.conn.commit()
        now = clock()
        # peer -> [successes, failures, timeouts, wrong, updated, banned_until]
        self.peers: dict[str, list[float]] = {
            p: [float(s), float(f), float(t), float(w), float(u) or now, float(b)] for p, s, f, t, w, u, b in
            self.conn.execute("SELECT peer_id, successes, failures, timeouts, wrong, updated, banned_until "
                              "FROM reputation")}
        self.dirty = DirtyPeers()  # changed since the last flush

    def _rec(self, peer: str) -> list[float]:
        now = self.clock()
        rec = self.peers.get(peer)
        if rec is None:
            rec = self.peers[peer] = [0.0, 0.0, 0.0, 0.0, now, 0.0]
            return rec
        if self.half_life > 0 and now > rec[4]:
            f = 0.5 ** ((now - rec[4]) / self.half_life)
            for i in range(4):
                rec[i] *= f
        rec[4] = max(rec[4], now)
        return rec

    def note(self, peer: str, outcome: str) -> None:
        rec = self._rec(peer)
        rec[OUTCOMES[outcome]] += 1
        if outcome == "wrong" and rec[3] >= self.ban_after - 1e-9 and self.ban_duration > 0:
            rec[5] = self.clock() + self.ban_duration
            metrics.EXCLUDED.inc()
        self.dirty.touch(peer)

    def banned(self, peer: str) -> bool:
        rec = self.peers.get(peer)
        return rec is not None and rec[5] > self.clock()

    def score(self, peer: str) -> float:
        if peer not in self.peers:
            return 0.5
        s, f, t, w = self._rec(peer)[:4]
        return (s + 1) / (s + f + 2 * t + 4 * w + 2)

    def flush(self) -> None:
        if not self.dirty:
            return
        self.conn.executemany(
            "INSERT INTO reputation (peer_id, successes, failures, timeouts, wrong, updated, banned_until) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(peer_id) DO UPDATE SET successes=excluded.successes, "
            "failures=excluded.failures, timeouts=excluded.timeouts, wrong=excluded.wrong, updated=excluded.updated, "
            "banned_until=excluded.banned_until",
            [(p, *self.peers[p]) for p in self.dirty])
        self.dirty.clear()
        self.db.touch(lazy=True)

    def brief(self) -> str:
        return " ".join(f"{p[-6:]}:{s:.0f}/{f:.0f}/{t:.0f}/{w:.0f}" for p, (s, f, t, w, _, _)
                        in sorted(self.peers.items())) or "-"

    def doc(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        out = {}
        for p in sorted(self.peers):
            s, f, t, w, _, until = self._rec(p)
            out[p] = {"successes": round(s, 2), "failures": round(f, 2), "timeouts": round(t, 2),
                      "wrong": round(w, 2), "score": round(self.score(p), 3),
                      "excluded_for_s": round(until - now, 1) if until > now else 0}
        return out
