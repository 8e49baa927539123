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


class _Recording(Shedder):
    """A shedder that keeps what it was fed, so a failure shows the samples."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[tuple[float, float]] = []

    def observe(self, cpu_share: float, lag_s: float) -> bool:
        self.samples.append((round(cpu_share, 2), round(lag_s, 2)))
        return super().observe(cpu_share, lag_s)


async def _busy_then_idle() -> None:
    shedder = _Recording()
    monitor = LoadMonitor(shedder, period=0.1)

    async def hog(limit_s: float) -> None:
        """Busy for 0.6 s between checkpoints, like a node behind on its work, until the shedder reacts (bounded)."""
        end = time.monotonic() + limit_s
        while not shedder.shedding and time.monotonic() < end:
            busy_until = time.monotonic() + 0.6
            while time.monotonic() < busy_until:
                pass
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(monitor.run)
        await hog(15.0)
        # The 0.1 s sleep wakes >= 0.5 s late (and the process uses a core, unless the machine is too busy to give
        # it one: lag alone is pressure too); ENTER_SAMPLES such samples in a row start the shedding.
        assert shedder.shedding and (monitor.lag_s >= 0.25 or monitor.cpu_share >= 0.85), shedder.samples
        with trio.fail_after(10):
            while shedder.shedding:
                await trio.sleep(0.1)
        assert monitor.cpu_share < 0.5, shedder.samples[-10:]
        nursery.cancel_scope.cancel()
