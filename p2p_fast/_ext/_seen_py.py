"""Pure-Python twin of ``_seen_c``: the gossip seen-cache and an O(1) validation-result cache.

``SeenCache`` replaces py-libp2p's ``Pubsub.seen_messages`` (a ``LastSeenCache``, whose background thread sweeps
a dict once a minute). Time is cut into slots of ``ttl / buckets`` seconds and a ring of ``buckets + 1`` lists
files each key under the slot it was last touched in; ``_where`` maps a key to that list. Touching a key in a later
slot re-files it (the old list keeps a stale entry, skipped later). Every call first rotates the ring lazily: the
lists of slots more than ``buckets`` slots old are walked, their keys still filed there dropped from ``_where``,
and emptied, so each filing costs O(1) once. A key touched at time t is therefore remembered until some time in
``(t + ttl, t + ttl + ttl / buckets]``: exactly while ``slot(now) - slot(last touch) <= buckets``.

``ValidationCache`` replaces ``Pubsub.validation_cache``: same ``get``/``put``/``clear_expired``, same expiry rule
(``now - result.timestamp > ttl``, wall clock), LRU eviction at ``max_size``, but O(1) ``get``/``put`` instead of
O(n) list surgery. One deliberate difference: re-putting a key already cached replaces it in place and never
evicts another entry. ``clear_expired`` walks every entry (O(n), py-libp2p calls it once a minute).
"""

from __future__ import annotations

import math
import operator
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["DEFAULT_BUCKETS", "SeenCache", "ValidationCache"]

DEFAULT_BUCKETS = 16


def _as_float(value: object) -> float:
    """``float(value)`` for real numbers only, as C's ``PyFloat_AsDouble`` (no parsing of strings)."""
    if isinstance(value, float):
        return value
    if hasattr(type(value), "__float__") or hasattr(type(value), "__index__"):
        return float(value)  # type: ignore[arg-type]
    raise TypeError(f"must be real number, not {type(value).__name__}")


class SeenCache:
    """Remember keys for ``ttl_seconds`` after they were last added or checked (``LastSeenCache`` semantics).

    ``clock`` returns seconds as a float; default ``time.monotonic`` (``None`` means the same). Inject a fake clock
    in tests. The clock must be finite; if it goes backwards the cache keeps its newest time slot.
    """

    def __init__(
        self, ttl_seconds: float, buckets: int = DEFAULT_BUCKETS, clock: Callable[[], float] | None = None
    ) -> None:
        ttl_seconds = _as_float(ttl_seconds)
        buckets = operator.index(buckets)
        if not ttl_seconds > 0.0 or math.isinf(ttl_seconds):
            raise ValueError(f"ttl_seconds must be positive and finite, got {ttl_seconds!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets!r}")
        self.ttl = ttl_seconds
        self.buckets = buckets
        self._width = ttl_seconds / buckets
        self._clock = time.monotonic if clock is None else clock
        self._ring: list[list[Hashable]] = [[] for _ in range(buckets + 1)]
        self._where: dict[Hashable, list[Hashable]] = {}
        self._gen = math.floor(float(self._clock()) / self._width)
        self._cur = self._ring[self._gen % len(self._ring)]

    def _advance(self) -> None:
        gen = math.floor(float(self._clock()) / self._width)
        if gen <= self._gen:
            return
        ring = self._ring
        nslots = len(ring)
        where = self._where
        if gen - self._gen >= nslots:
            for bucket in ring:
                bucket.clear()
            where.clear()
        else:
            for step in range(self._gen + 1, gen + 1):
                bucket = ring[step % nslots]
                for key in bucket:
                    if where.get(key) is bucket:  # not touched again since it was filed here
                        del where[key]
                bucket.clear()
        self._gen = gen
        self._cur = ring[gen % nslots]

    def add(self, key: Hashable) -> bool:
        """Remember ``key`` (again); True if it was not remembered before."""
        self._advance()
        cur = self._cur
        held = self._where.get(key)
        if held is not cur:
            self._where[key] = cur
            cur.append(key)
        return held is None

    def has(self, key: Hashable) -> bool:
        """Whether ``key`` is remembered; a hit refreshes it, as ``LastSeenCache.has`` does."""
        self._advance()
        held = self._where.get(key)
        if held is None:
            return False
        cur = self._cur
        if held is not cur:
            self._where[key] = cur
            cur.append(key)
        return True

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is remembered, without refreshing it."""
        self._advance()
        return key in self._where

    def length(self) -> int:
        """Number of keys remembered (``BaseTimedCache.length``)."""
        self._advance()
        return len(self._where)

    def __len__(self) -> int:
        return self.length()

    def clear(self) -> None:
        """Forget every key."""
        for bucket in self._ring:
            bucket.clear()
        self._where.clear()

    def stop(self) -> None:
        """No-op: there is no background thread (``BaseTimedCache.stop`` joins one)."""


class ValidationCache:
    """Validation results by message id: expire ``ttl`` seconds after ``result.timestamp``, LRU past ``max_size``.

    ``clock`` defaults to ``time.time`` because py-libp2p stamps results with ``time.time()``.
    """

    def __init__(self, ttl: float = 300, max_size: int = 1000, clock: Callable[[], float] | None = None) -> None:
        self.ttl = _as_float(ttl)
        self.max_size = operator.index(max_size)
        self._clock = time.time if clock is None else clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, msg_id: Hashable) -> Any | None:
        """The cached result, or None if absent or expired (an expired entry is dropped)."""
        entry = self._entries.get(msg_id)
        if entry is None:
            return None
        if float(self._clock()) - entry[0] > self.ttl:
            del self._entries[msg_id]
            return None
        self._entries.move_to_end(msg_id)
        return entry[1]

    def put(self, msg_id: Hashable, result: Any) -> None:
        """Cache ``result`` (anything with a float ``timestamp``), evicting the least recently used if full."""
        entry = (float(result.timestamp), result)
        entries = self._entries
        if msg_id in entries:
            entries[msg_id] = entry
            entries.move_to_end(msg_id)
            return
        while entries and len(entries) >= self.max_size:
            entries.popitem(last=False)
        entries[msg_id] = entry

    def clear_expired(self) -> None:
        """Drop every expired entry."""
        now = float(self._clock())
        ttl = self.ttl
        expired = [key for key, (stamp, _) in self._entries.items() if now - stamp > ttl]
        for key in expired:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._entries

    def clear(self) -> None:
        self._entries.clear()
