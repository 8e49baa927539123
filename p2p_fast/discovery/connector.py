"""Keep the node connected to enough peers beyond its bootstrap: dial peers that others announce (their advertised
addresses) and peers discovered by mDNS, up to a target count. This is what lets the network survive the loss of
its bootstrap node: workers know each other directly, so the gossip mesh does not hinge on one hub."""

from __future__ import annotations

import logging
import random

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from .. import metrics
from ..multiaddrs import is_relayed

log = logging.getLogger(__name__)


class Connector:
    def __init__(self, host: IHost, target_peers: int, dial_timeout: float) -> None:
        self.host = host
        self.target_peers = target_peers
        self.dial_timeout = dial_timeout
        self.candidates: dict[ID, list[multiaddr.Multiaddr]] = {}
        self._failed_until: dict[ID, float] = {}
        self._send, self._recv = trio.open_memory_channel[PeerInfo](256)

    def offer(self, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        """A peer we might connect to (from an advertisement or discovery). Never blocks."""
        if peer_id == self.host.get_id():
            return
        # Circuit addresses last: the swarm dials them only if the direct ones fail or are slow (p2p_fast.nat).
        ordered = [a for a in addrs if not is_relayed(a)] + [a for a in addrs if is_relayed(a)]
        if ordered:
            if ordered != self.candidates.get(peer_id):
                self._failed_until.pop(peer_id, None)  # new addresses (e.g. a relay reservation): worth a try now
            self.candidates[peer_id] = ordered

    def offer_now(self, info: PeerInfo) -> None:
        """Dial soon regardless of the target count (mDNS finds are few and local)."""
        try:
            self._send.send_nowait(info)
        except trio.WouldBlock:
            pass

    async def _dial(self, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        if peer_id in self.host.get_connected_peers():
            return
        if self._failed_until.get(peer_id, 0.0) > trio.current_time():
            return
        with trio.move_on_after(self.dial_timeout):
            try:
                await self.host.connect(PeerInfo(peer_id, addrs))
                log.debug("connected to announced peer %s", peer_id)
                return
            except Exception as exc:
                metrics.DIAL_FAILURES.labels("peer").inc()
                log.debug("dial %s failed: %s", peer_id, exc)
        self._failed_until[peer_id] = trio.current_time() + 30.0

    async def _immediate(self) -> None:
        async for info in self._recv:
            await self._dial(info.peer_id, list(info.addrs))

    async def run(self, interval: float = 2.0) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._immediate)
            while True:
                connected = set(self.host.get_connected_peers())
                missing = self.target_peers - len(connected)
                if missing > 0:
                    choices = [p for p in self.candidates if p not in connected]
                    random.shuffle(choices)
                    async with trio.open_nursery() as dials:
                        for pid in choices[:missing]:
                            dials.start_soon(self._dial, pid, self.candidates[pid])
                await trio.sleep(interval)
