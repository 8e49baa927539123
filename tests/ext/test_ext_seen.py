"""SeenCache and ValidationCache: LastSeenCache / ValidationCache interfaces, bucketed expiry under a fake clock,
both implementations identical."""

from __future__ import annotations

import math
import time

import pytest
from ext_testkit import FakeClock, outcome
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.pubsub.pubsub import ValidationCache as StockValidationCache
from libp2p.pubsub.pubsub import ValidationResult
from libp2p.tools.timed_cache.last_seen_cache import LastSeenCache

# ---------------------------------------------------------------- SeenCache


def test_add_has_length(seen_impl, clock) -> None:
    cache = seen_impl.SeenCache(120, clock=clock)
    assert cache.add(b"m1") is True
    assert cache.add(b"m1") is False
    assert cache.has(b"m1") is True
    assert cache.has(b"m2") is False
    assert cache.add(b"m2") is True
    assert cache.length() == 2 == len(cache)
    assert b"m1" in cache and b"m3" not in cache
    cache.stop()  # no thread to join; must not fail
    cache.clear()
    assert cache.length() == 0 and not cache.has(b"m1")


def test_offers_everything_pubsub_calls_on_last_seen_cache(seen_impl) -> None:
    stock = LastSeenCache(120, 60)
    try:
        ours = seen_impl.SeenCache(120)
        for name in ("add", "has", "length", "stop"):
            assert callable(getattr(ours, name)), name
        for key in (b"a", b"b", b"a"):
            assert ours.add(key) == stock.add(key)
        for key in (b"a", b"c"):
            assert ours.has(key) == stock.has(key)
        assert ours.length() == stock.length()
    finally:
        stock.stop()


def test_real_monotonic_clock_by_default(seen_impl) -> None:
    cache = seen_impl.SeenCache(60)
    assert cache.add(b"k") and cache.has(b"k") and cache.length() == 1


def test_key_lives_at_least_ttl_and_at_most_ttl_plus_one_bucket(seen_impl, clock) -> None:
    clock.now = 0.0
    cache = seen_impl.SeenCache(10, buckets=5, clock=clock)  # buckets of 2 s
    cache.add(b"k")  # t=0, slot [0, 2)
    clock.now = 10.0
    assert b"k" in cache
    clock.now = 11.999
    assert b"k" in cache
    clock.now = 12.0
    assert b"k" not in cache
    assert cache.length() == 0
    assert cache.add(b"k") is True  # forgotten, so new again


def test_has_refreshes_but_contains_does_not(seen_impl, clock) -> None:
    clock.now = 0.0
    cache = seen_impl.SeenCache(10, buckets=10, clock=clock)
    cache.add(b"refreshed")
    cache.add(b"peeked")
    clock.now = 9.5
    assert cache.has(b"refreshed")
    assert b"peeked" in cache
    clock.now = 15.0
    assert cache.has(b"refreshed")
    assert b"peeked" not in cache
    clock.now = 25.0
    assert cache.has(b"refreshed")  # refreshed at 15
    clock.now = 36.0
    assert not cache.has(b"refreshed")


def test_add_of_a_known_key_refreshes_it(seen_impl, clock) -> None:
    clock.now = 0.0
    cache = seen_impl.SeenCache(4, buckets=4, clock=clock)
    cache.add(b"k")
    clock.now = 3.5
    assert cache.add(b"k") is False
    clock.now = 7.5
    assert b"k" in cache


def test_long_idle_gap_forgets_everything(seen_impl, clock) -> None:
    cache = seen_impl.SeenCache(1, buckets=3, clock=clock)
    for i in range(100):
        cache.add(i)
    clock.advance(1e6)
    assert cache.length() == 0
    assert cache.add(0) is True


def test_clock_going_backwards_keeps_newest_slot(seen_impl, clock) -> None:
    clock.now = 100.0
    cache = seen_impl.SeenCache(10, buckets=2, clock=clock)
    cache.add(b"k")
    clock.now = 50.0
    assert cache.has(b"k") and cache.add(b"j")
    clock.now = 114.0
    assert b"k" in cache and b"j" in cache
    clock.now = 115.0
    assert b"k" not in cache and b"j" not in cache


def test_negative_clock_values_floor_into_slots(seen_impl, clock) -> None:
    clock.now = -1.5
    cache = seen_impl.SeenCache(1, buckets=1, clock=clock)  # slots of 1 s: [-2, -1), [-1, 0), [0, 1)
    cache.add(b"k")
    clock.now = -0.01
    assert b"k" in cache
    clock.now = 0.0
    assert b"k" not in cache


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan])
def test_bad_ttl(seen_impl, ttl) -> None:
    with pytest.raises(ValueError):
        seen_impl.SeenCache(ttl)


def test_bad_buckets(seen_impl) -> None:
    with pytest.raises(ValueError):
        seen_impl.SeenCache(10, buckets=0)
    with pytest.raises(TypeError):
        seen_impl.SeenCache(10, buckets=2.5)
    with pytest.raises(TypeError):
        seen_impl.SeenCache("10")


def test_unhashable_key(seen_impl) -> None:
    cache = seen_impl.SeenCache(10)
    with pytest.raises(TypeError):
        cache.add([1])


seen_ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "has", "in", "len"]),
        st.integers(0, 7),  # small key space: hits, refreshes and expiries all happen
        st.floats(0, 6, allow_nan=False),  # time step
    ),
    max_size=80,
)


def _model_alive(touched: dict[int, int], gen: int, buckets: int) -> set[int]:
    return {k for k, g in touched.items() if gen - g <= buckets}


@settings(max_examples=200, deadline=None)
@given(
    ttl=st.floats(0.5, 20),
    buckets=st.integers(1, 6),
    start=st.one_of(st.floats(-60, 60), st.floats(-1e6, 1e6)),  # often crossing zero
    ops=seen_ops,
)
def test_both_match_the_bucket_model(seen_pair, ttl: float, buckets: int, start: float, ops) -> None:
    """Both implementations return the same thing for every call, and what the bucket model says.

    Model: a key touched (added, or found by ``has``) in time slot g = floor(t / (ttl / buckets)) is remembered
    while the current slot is at most g + buckets.
    """
    clocks = [FakeClock(start), FakeClock(start)]
    caches = [m.SeenCache(ttl, buckets, clock=clk) for m, clk in zip(seen_pair, clocks)]
    width = ttl / buckets
    touched: dict[int, int] = {}
    now = start
    for op, key, step in ops:
        now += step
        for clk in clocks:
            clk.now = now
        gen = math.floor(now / width)
        alive = _model_alive(touched, gen, buckets)
        results = []
        for cache in caches:
            if op == "add":
                results.append(cache.add(key))
            elif op == "has":
                results.append(cache.has(key))
            elif op == "in":
                results.append(key in cache)
            else:
                results.append(cache.length())
        expected = {"add": key not in alive, "has": key in alive, "in": key in alive, "len": len(alive)}[op]
        assert results == [expected, expected], (op, key, now)
        if op == "add" or (op == "has" and key in alive):
            touched[key] = gen


@settings(max_examples=100, deadline=None)
@given(
    buckets=st.integers(1, 4),
    start=st.floats(-20, 20),
    ops=st.lists(st.tuples(st.sampled_from(["add", "has", "len"]), st.integers(0, 4), st.floats(-8, 8)),
                 max_size=60),
)
def test_both_agree_even_when_the_clock_jumps_back(seen_pair, buckets: int, start: float, ops) -> None:
    clocks = [FakeClock(start), FakeClock(start)]  # negative times too: floor and slot of negative values
    caches = [m.SeenCache(5, buckets, clock=clk) for m, clk in zip(seen_pair, clocks)]
    for op, key, step in ops:
        for clk in clocks:
            clk.advance(step)
        got = [outcome(cache.length) if op == "len" else outcome(getattr(cache, op), key) for cache in caches]
        assert got[0] == got[1]


# ---------------------------------------------------------------- ValidationCache


def result(valid: bool, at: float, error: str | None = None) -> ValidationResult:
    return ValidationResult(is_valid=valid, timestamp=at, error_message=error)


def test_validation_get_put(seen_impl, clock) -> None:
    cache = seen_impl.ValidationCache(300, 1000, clock=clock)
    assert cache.get(b"m") is None
    ok = result(True, clock.now)
    cache.put(b"m", ok)
    assert cache.get(b"m") is ok
    bad = result(False, clock.now, "Synchronous validation failed")
    cache.put(b"n", bad)
    assert cache.get(b"n") is bad
    assert len(cache) == 2 and b"m" in cache
    assert cache.ttl == 300 and cache.max_size == 1000


def test_validation_expiry_is_strictly_after_ttl(seen_impl, clock) -> None:
    cache = seen_impl.ValidationCache(300, 10, clock=clock)
    cache.put(b"m", result(True, 1000.0))
    clock.now = 1300.0
    assert cache.get(b"m") is not None
    clock.now = 1300.5
    assert cache.get(b"m") is None
    assert len(cache) == 0


def test_validation_lru_eviction(seen_impl, clock) -> None:
    cache = seen_impl.ValidationCache(300, 3, clock=clock)
    for key in (b"a", b"b", b"c"):
        cache.put(key, result(True, clock.now))
    cache.get(b"a")  # a is now most recently used; b is the oldest
    cache.put(b"d", result(True, clock.now))
    assert b"b" not in cache and all(k in cache for k in (b"a", b"c", b"d"))
    cache.put(b"c", result(False, clock.now))  # re-put of a cached key: replaced in place, nothing evicted
    assert len(cache) == 3 and cache.get(b"c").is_valid is False


def test_validation_clear_expired(seen_impl, clock) -> None:
    cache = seen_impl.ValidationCache(10, 100, clock=clock)
    for i in range(20):
        cache.put(i, result(True, clock.now + i))
    clock.advance(15)  # entries stamped before now - 10 are expired: 0..4
    cache.clear_expired()
    assert len(cache) == 15
    assert all(i not in cache for i in range(5)) and all(i in cache for i in range(5, 20))
    cache.clear()
    assert len(cache) == 0 and cache.get(7) is None


def test_validation_zero_max_size_holds_the_latest_like_stock(seen_impl, clock) -> None:
    cache = seen_impl.ValidationCache(10, 0, clock=clock)
    cache.put(b"a", result(True, clock.now))
    cache.put(b"b", result(True, clock.now))
    assert len(cache) == 1 and b"b" in cache


def test_validation_default_clock_is_wall_time(seen_impl) -> None:
    cache = seen_impl.ValidationCache(300, 10)
    cache.put(b"fresh", result(True, time.time()))
    cache.put(b"stale", result(True, time.time() - 301))
    assert cache.get(b"fresh") is not None
    assert cache.get(b"stale") is None


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=120))
def test_validation_evicts_like_stock(seen_impl, max_size: int, ops) -> None:
    """Against py-libp2p's own ValidationCache, for puts of new keys and gets (nothing expires)."""
    stock = StockValidationCache(ttl=10**9, max_size=max_size)
    ours = seen_impl.ValidationCache(10**9, max_size)
    seen_keys: set[int] = set()
    for is_put, key in ops:
        if is_put and key not in seen_keys:  # stock evicts even when re-putting a cached key; we do not
            seen_keys.add(key)
            r = result(True, 0.0)
            stock.put(key, r)
            ours.put(key, r)
        else:
            assert ours.get(key) is stock.get(key)
    assert sorted(k for k in range(31) if k in ours) == sorted(stock.cache)


@settings(max_examples=150, deadline=None)
@given(
    ttl=st.floats(0, 20),
    max_size=st.integers(0, 6),
    ops=st.lists(
        st.tuples(st.sampled_from(["put", "get", "clear_expired", "len"]), st.integers(0, 9), st.floats(0, 5),
                  st.floats(-10, 10)),
        max_size=80,
    ),
)
def test_validation_both_agree(seen_pair, ttl: float, max_size: int, ops) -> None:
    clocks = [FakeClock(0.0), FakeClock(0.0)]
    caches = [m.ValidationCache(ttl, max_size, clock=clk) for m, clk in zip(seen_pair, clocks)]
    for op, key, step, stamp_offset in ops:
        for clk in clocks:
            clk.advance(step)
        r = result(bool(key % 2), clocks[0].now + stamp_offset)
        got = []
        for cache in caches:
            if op == "put":
                got.append(cache.put(key, r))
            elif op == "get":
                got.append(cache.get(key))
            elif op == "clear_expired":
                got.append(cache.clear_expired())
            else:
                got.append(len(cache))
        assert got[0] is got[1]  # the same result object, or both None
        assert [k for k in range(10) if k in caches[0]] == [k for k in range(10) if k in caches[1]]
