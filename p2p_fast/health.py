"""Connection health: ping every connected peer each heartbeat, record RTT, drop peers that stop answering.

``network.connection_timeout`` bounds each ping; two consecutive failures close the connection so a dead peer does
not hold a mesh slot until TCP notices (which can take many minutes).
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost
from libp2p.host.ping import PingService
from libp2p.peer.id import ID

from . import metrics

log = logging.getLogger(__name__)
FAILURES_BEFORE_DROP = 2


class HealthMonitor:
    def __init__(self, host: IHost, interval: float, timeout: float) -> None:
        self.host = host
        self.interval = interval
        self.timeout = timeout
        self.ping = PingService(host)
        self.rtt: dict[ID, float] = {}
        self.failures: dict[ID, int] = {}

    async def ping_once(self, peer: ID) -> float | None:
        start = trio.current_time()
        with trio.move_on_after(self.timeout):
            try:
                await self.ping.ping(peer, ping_amt=1)
            except Exception as exc:
                log.debug("ping %s failed: %s", peer, exc)
                return None
            rtt = trio.current_time() - start
            self.rtt[peer] = rtt
            metrics.PING_RTT.observe(rtt)
            return rtt
        return None

    async def _check(self, peer: ID) -> None:
        if await self.ping_once(peer) is not None:
            self.failures.pop(peer, None)
            return
        metrics.PING_FAILURES.inc()
        n = self.failures[peer] = self.failures.get(peer, 0) + 1
        if n >= FAILURES_BEFORE_DROP:
            log.warning("peer %s failed %d pings in a row; closing its connection", peer, n)
            self.failures.pop(peer, None)
            self.rtt.pop(peer, None)
            try:
                await self.host.get_network().close_peer(peer)
            except Exception as exc:
                log.debug("closing %s failed: %s", peer, exc)

    async def run(self) -> None:
        await trio.sleep(min(1.0, self.interval))
        while True:
            peers = list(self.host.get_connected_peers())
            for gone in set(self.rtt) - set(peers):
                self.rtt.pop(gone, None)
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(self._check, peer)
            await trio.sleep(self.interval)
