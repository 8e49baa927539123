"""Per-peer limits: who may submit tasks to this worker, and how fast.

:class:`RateLimiter` is a token bucket per key (a peer ID): ``rate`` tokens a second up to ``burst``; a request
takes one. Buckets of peers that went quiet are forgotten first (at most ``max_keys`` are kept, so a stream of new
peer IDs cannot grow memory), and a forgotten bucket comes back full — the limit is a fairness and flood bound, not
an accounting. :class:`SubmitterPolicy` is what a worker asks for each task request that arrives on a stream:
``tasks.allowed_submitters`` (empty: every peer of the network) and ``tasks.submit_rate`` / ``tasks.submit_burst``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from p2p_fast.core.config import TasksSection

MAX_KEYS = 4096
NOT_ALLOWED = "not-allowed"
RATE_LIMITED = "rate-limited"


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("need rate >= 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, last refill]

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def allow(self, key: str, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket if it has them."""
        if self.unlimited:
            return True
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= cost:
            bucket[0] -= cost
            return True
        return False

    def __len__(self) -> int:
        return len(self._buckets)


class SubmitterPolicy:
    """Decides, per task request, whether this worker takes it from that submitter (see the module doc)."""

    def __init__(self, tasks_cfg: TasksSection) -> None:
        self.allowed: frozenset[str] = frozenset(tasks_cfg.allowed_submitters)
        self.limiter = RateLimiter(tasks_cfg.submit_rate, tasks_cfg.submit_burst)

    def refuse(self, submitter: str, local: bool = False) -> str | None:
        """None to accept; else the reason (``not-allowed`` or ``rate-limited``). The node's own tasks (``local``)
        are always accepted."""
        if local:
            return None
        if self.allowed and submitter not in self.allowed:
            return NOT_ALLOWED
        if not self.limiter.allow(submitter):
            return RATE_LIMITED
        return None
