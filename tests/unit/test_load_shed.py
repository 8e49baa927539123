"""Load shedding: the hysteresis of the decision and real CPU/lag measurement (the GossipSub IHAVE hook is a patch:
tests/stack/patches/test_gossip_ihave_shedding.py)."""

from __future__ import annotations

import time

import pytest
import trio

from p2p_fast.stack.load_shed import ENTER_SAMPLES, LEAVE_SAMPLES, LoadMonitor, Shedder


def test_sheds_after_consecutive_pressure_and_resumes_only_after_sustained_relief():
    s = Shedder(cpu_high=0.85, lag_high=0.25)
    assert not s.observe(0.95, 0.0)  # one sample is noise
    assert s.observe(0.9, 0.0) and ENTER_SAMPLES == 2
    assert not s.allow("gossip-ihave") and not s.allow("dht-refresh") and not s.allow("advert-refresh")
    assert s.skipped == {"gossip-ihave": 1, "dht-refresh": 1, "advert-refresh": 1}
    for _ in range(LEAVE_SAMPLES - 1):
        assert s.observe(0.1, 0.01)
    assert s.observe(0.7, 0.0)  # between relief and the limit: neither in nor out, the streak restarts
    for _ in range(LEAVE_SAMPLES - 1):
        assert s.observe(0.1, 0.01)
    assert not s.observe(0.1, 0.01)
    assert s.allow("gossip-ihave")


def test_scheduler_lag_alone_is_pressure():
    s = Shedder()
    s.observe(0.1, 0.5)
    assert s.observe(0.1, 0.4)


def test_unknown_work_is_an_error():
    with pytest.raises(ValueError, match="unknown optional work"):
        Shedder().allow("pings")


def test_monitor_measures_a_busy_process_and_an_idle_one():
    trio.run(_busy_then_idle)


async def _busy_then_idle() -> None:
    shedder = Shedder()
    monitor = LoadMonitor(shedder, period=0.1)

    async def hog(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # bounded; yields rarely, like a node behind on its work
            busy_until = time.monotonic() + 0.6
            while time.monotonic() < busy_until:
                pass
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run)
        await hog(2.5)
        # Busy for 0.6 s between checkpoints: the 0.1 s sleep wakes >= 0.5 s late (and the process uses a core,
        # unless the machine is too busy to give it one: lag alone is pressure too).
        assert shedder.shedding and (monitor.lag_s >= 0.25 or monitor.cpu_share >= 0.85)
        with trio.fail_after(10):
            while shedder.shedding:
                await trio.sleep(0.1)
        assert monitor.cpu_share < 0.5
        nursery.cancel_scope.cancel()
