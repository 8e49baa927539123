"""Shed optional work when the node is short of CPU, before anything has to drop a connection.

A node that falls behind on a busy machine (a join storm, a shared 2-core host) first stops doing what only keeps
the network tidy: GossipSub IHAVE gossip (the mesh still carries every message), DHT routing-table refreshes and
provider re-announcements, and presence refresh advertisements (their TTL covers three refresh intervals). What it
keeps: reading and forwarding messages, tasks, join and change advertisements, liveness.

:class:`LoadMonitor` samples, every ``period`` seconds, the process's own CPU share (``time.process_time`` over wall
time, 1.0 = one full core: py-libp2p runs on one thread) and the trio scheduling lag (how late a ``trio.sleep``
wakes up). :class:`Shedder` decides with hysteresis: it starts shedding after ``ENTER_SAMPLES`` samples in a row at
or over either limit and stops after ``LEAVE_SAMPLES`` in a row under ``RELIEF`` of both, so it does not flap.
GossipSub's IHAVE gossip asks the shedder through a per-instance patch,
:func:`p2p_fast.stack.patches.gossip_ihave_shedding.shed_gossip_ihave`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import trio

from p2p_fast.core import metrics

log = logging.getLogger(__name__)
CPU_HIGH = 0.85  # of one core
LAG_HIGH_S = 0.25
RELIEF = 0.6  # leave below RELIEF x the limits
ENTER_SAMPLES = 2
LEAVE_SAMPLES = 5
OPTIONAL = ("gossip-ihave", "dht-refresh", "advert-refresh")


class Shedder:
    """The decision, apart from the measuring (unit-testable with any samples)."""

    def __init__(self, cpu_high: float = CPU_HIGH, lag_high: float = LAG_HIGH_S) -> None:
        self.cpu_high = cpu_high
        self.lag_high = lag_high
        self.shedding = False
        self._over = 0
        self._under = 0
        self.skipped: dict[str, int] = {kind: 0 for kind in OPTIONAL}

    def observe(self, cpu_share: float, lag_s: float) -> bool:
        """Feed one sample; returns whether optional work is shed from now on."""
        over = cpu_share >= self.cpu_high or lag_s >= self.lag_high
        relieved = cpu_share < RELIEF * self.cpu_high and lag_s < RELIEF * self.lag_high
        self._over = self._over + 1 if over else 0
        self._under = self._under + 1 if relieved else 0
        if not self.shedding and self._over >= ENTER_SAMPLES:
            self.shedding = True
            log.warning("under CPU pressure (%.0f%% of a core, scheduler %.0f ms late): shedding optional work "
                        "(%s)", 100 * cpu_share, 1000 * lag_s, ", ".join(OPTIONAL))
        elif self.shedding and self._under >= LEAVE_SAMPLES:
            self.shedding = False
            log.info("CPU pressure over: optional work resumes")
        return self.shedding

    def allow(self, kind: str) -> bool:
        """May optional work of this ``kind`` run now? Counts what it refuses."""
        if kind not in self.skipped:
            raise ValueError(f"unknown optional work {kind!r}; one of {', '.join(OPTIONAL)}")
        if not self.shedding:
            return True
        self.skipped[kind] += 1
        metrics.WORK_SHED.labels(kind).inc()
        return False


class LoadMonitor:
    """Samples CPU share and scheduling lag into a :class:`Shedder` (``run`` in the node's nursery)."""

    def __init__(self, shedder: Shedder, period: float = 1.0,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        self.shedder = shedder
        self.period = period
        self.cpu_clock = cpu_clock
        self.cpu_share = 0.0
        self.lag_s = 0.0

    async def run(self) -> None:
        cpu0, t0 = self.cpu_clock(), trio.current_time()
        while True:
            await trio.sleep(self.period)
            cpu1, t1 = self.cpu_clock(), trio.current_time()
            wall = max(t1 - t0, 1e-6)
            self.lag_s = max(0.0, wall - self.period)
            self.cpu_share = (cpu1 - cpu0) / wall
            metrics.CPU_SHARE.set(self.cpu_share)
            metrics.SCHEDULER_LAG.set(self.lag_s)
            metrics.SHEDDING.set(1 if self.shedder.observe(self.cpu_share, self.lag_s) else 0)
            cpu0, t0 = cpu1, t1
