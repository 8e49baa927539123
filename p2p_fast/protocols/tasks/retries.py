"""When a failed attempt is tried again, and how a task's failures read. Pure: no network, no trio.

An attempt that counts (the worker ran it, or should have) waits ``tasks.retry_backoff * 2^(n-1)`` seconds, capped
at ``MAX_BACKOFF`` and jittered by +-25 % so that tasks that failed together do not come back together. An attempt
that does not count (the worker was unreachable) is retried almost at once, on another worker; one the worker
rejected (it lacks the type) at once.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable

from p2p_fast.protocols.tasks.journal import Attempt, TaskRecord

MAX_BACKOFF = 10.0
UNCOUNTED_DELAY = 0.05  # an unreachable worker: the next one gets it after a breath, not in the same round
JITTER = (0.75, 1.25)


def retry_delay(counted_attempts: int, base: float, *, counted: bool, backoff: bool,
                uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before the next attempt of a task with ``counted_attempts`` counted attempts behind it."""
    n = max(1, counted_attempts)
    delay = min(base * 2 ** (n - 1), MAX_BACKOFF) * uniform(*JITTER)
    if not backoff or not counted:
        delay = UNCOUNTED_DELAY if not counted else 0.0
    return delay


def excluded_workers(attempts: Iterable[Attempt]) -> set[str]:
    """Workers that failed this task already (in a counted attempt): tried again only when nobody else can."""
    return {a.worker for a in attempts if a.counted and a.outcome != "ok"}


def end_attempt(rec: TaskRecord, when: float, outcome: str, reason: str, counted: bool = True) -> None:
    """Close ``rec``'s current attempt with ``outcome``."""
    a = rec.attempts[-1]
    a.ended, a.outcome, a.reason, a.counted = when, outcome, reason, counted


def attempt_summary(rec: TaskRecord, prefix: str) -> str:
    """Every failed attempt in one line (``#2 <peer>: timeout (no answer ...)``), after ``prefix``; "" if none."""
    parts = [f"#{a.n} {a.worker}: {a.outcome}" + (f" ({a.reason})" if a.reason else "")
             for a in rec.attempts if a.outcome != "ok"]
    return prefix + "; ".join(parts) if parts else ""
