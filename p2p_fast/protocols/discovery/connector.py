"""Keep the node connected to enough peers beyond its bootstrap: dial peers that others announce (their advertised
addresses) and peers discovered by mDNS, up to a target count. This is what lets the network survive the loss of
its bootstrap node: workers know each other directly, so the gossip mesh does not hinge on one hub.

It is also the one place that dials discovered peers, so it is where a join storm is kept from turning into a
dial storm (a network that redials as fast as it can under overload never recovers):

- it stops at the target, and at the connection manager's low watermark (``room()``): adverts and mDNS finds only
  add candidates, they never dial past it, so discovery cannot rebuild a full mesh behind the manager's back;
- dials are bounded globally: at most ``MAX_CONCURRENT_DIALS`` at once and ``DIAL_RATE`` per second on average;
- a peer whose dial failed is retried after an exponential backoff with jitter (``BACKOFF_MIN`` doubling to
  ``BACKOFF_MAX``), per peer and its addresses: new addresses (e.g. a relay reservation) reset it;
- a peer whose connection closed is not redialed for ``RECONNECT_BACKOFF`` seconds (jittered): most closes are a
  connection manager pruning, and redialing the peer that just pruned us is a dial/prune loop that kept a 100-node
  network from ever settling;
- it dials only up to :func:`outbound_target`, half the low watermark: in a join storm every node's dials are
  matched by about as many inbound ones, so a node ends near twice its own target, and half of ``low`` keeps that
  below ``high`` (a target at ``high / 2`` put the average at ``high`` and half the nodes above it, pruning);
- the periodic round sleeps a jittered interval, so nodes started together do not dial in lockstep.
"""

from __future__ import annotations

import logging
import random
from typing import Callable

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core import metrics
from p2p_fast.core.multiaddrs import is_relayed

log = logging.getLogger(__name__)
MAX_CONCURRENT_DIALS = 4
DIAL_RATE = 4.0  # dials started per second, on average (token bucket of MAX_CONCURRENT_DIALS)
BACKOFF_MIN = 5.0
BACKOFF_MAX = 300.0
RECONNECT_BACKOFF = 60.0


def outbound_target(degree: int, low: int, max_connections: int) -> int:
    """How many peers the connector dials up to: half the connection manager's ``low`` (see the module doc), at
    least the GossipSub mesh degree (a mesh needs that many peers), never more than the hard cap."""
    return max(0, min(max_connections, max(degree, low // 2)))


def jittered(seconds: float, spread: float = 0.25) -> float:
    """``seconds`` +- ``spread`` of it, uniformly: periodic work of many nodes must not line up."""
    return seconds * random.uniform(1.0 - spread, 1.0 + spread)


class DialLimiter:
    """At most ``concurrency`` dials at once, started at ``rate`` per second on average (bursts of ``concurrency``)."""

    def __init__(self, concurrency: int = MAX_CONCURRENT_DIALS, rate: float = DIAL_RATE) -> None:
        self.slots = trio.Semaphore(concurrency)
        self.rate = rate
        self.burst = float(concurrency)
        self.tokens = float(concurrency)
        self.stamp: float | None = None

    async def acquire(self) -> None:
        await self.slots.acquire()
        try:
            while True:
                now = trio.current_time()
                if self.stamp is not None:
                    self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                metrics.DIALS_DEFERRED.labels("rate").inc()
                await trio.sleep((1.0 - self.tokens) / self.rate)
        except BaseException:
            self.slots.release()
            raise

    def release(self) -> None:
        self.slots.release()


class Connector:
    def __init__(self, host: IHost, target_peers: int, dial_timeout: float,
                 room: Callable[[], bool] = lambda: True) -> None:
        self.host = host
        self.target_peers = target_peers
        self.dial_timeout = dial_timeout
        self.room = room  # False once the connection manager wants no more peers (its low watermark)
        self.candidates: dict[ID, list[multiaddr.Multiaddr]] = {}
        self.limiter = DialLimiter()
        self._failed_until: dict[ID, float] = {}
        self._failures: dict[ID, int] = {}
        self._dialing: set[ID] = set()
        self._send, self._recv = trio.open_memory_channel[PeerInfo](256)

    def offer(self, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        """A peer we might connect to (from an advertisement or discovery). Never blocks."""
        if peer_id == self.host.get_id():
            return
        # Circuit addresses last: the swarm dials them only if the direct ones fail or are slow (p2p_fast.protocols.nat).
        ordered = [a for a in addrs if not is_relayed(a)] + [a for a in addrs if is_relayed(a)]
        if ordered:
            if ordered != self.candidates.get(peer_id):
                # new addresses (e.g. a relay reservation): worth a try now
                self._failed_until.pop(peer_id, None)
                self._failures.pop(peer_id, None)
            self.candidates[peer_id] = ordered

    def offer_now(self, info: PeerInfo) -> None:
        """Dial soon if the node has room for another peer (mDNS finds are few and local); else keep it as a
        candidate for when it has. Never blocks."""
        self.offer(info.peer_id, list(info.addrs))
        try:
            self._send.send_nowait(info)
        except trio.WouldBlock:
            pass

    def backoff(self, peer_id: ID) -> float:
        """Seconds until ``peer_id`` may be dialed again after its latest failure (0 if it may be now)."""
        return max(0.0, self._failed_until.get(peer_id, 0.0) - trio.current_time())

    def note_closed(self, peer_id: ID) -> None:
        """The last connection to ``peer_id`` closed, whichever side closed it: not redialed for about
        ``RECONNECT_BACKOFF`` seconds (a new address for it still resets that, as after a failed dial)."""
        until = trio.current_time() + random.uniform(0.5, 1.0) * RECONNECT_BACKOFF
        self._failed_until[peer_id] = max(self._failed_until.get(peer_id, 0.0), until)

    def _note_failure(self, peer_id: ID) -> None:
        n = self._failures[peer_id] = self._failures.get(peer_id, 0) + 1
        delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (n - 1))
        self._failed_until[peer_id] = trio.current_time() + random.uniform(0.5, 1.0) * delay

    async def _dial(self, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        if peer_id in self.host.get_connected_peers() or peer_id in self._dialing:
            return
        if self.backoff(peer_id) > 0:
            metrics.DIALS_DEFERRED.labels("backoff").inc()
            return
        if not self.room():
            metrics.DIALS_DEFERRED.labels("watermark").inc()
            return
        self._dialing.add(peer_id)
        try:
            await self.limiter.acquire()
            try:
                if not self.room() or peer_id in self.host.get_connected_peers():
                    return  # others connected while we waited for a dial slot
                with trio.move_on_after(self.dial_timeout):
                    try:
                        await self.host.connect(PeerInfo(peer_id, addrs))
                        log.debug("connected to announced peer %s", peer_id)
                        self._failures.pop(peer_id, None)
                        self._failed_until.pop(peer_id, None)
                        return
                    except Exception as exc:
                        metrics.DIAL_FAILURES.labels("peer").inc()
                        log.debug("dial %s failed: %s", peer_id, exc)
                self._note_failure(peer_id)
            finally:
                self.limiter.release()
        finally:
            self._dialing.discard(peer_id)

    async def _immediate(self, nursery: trio.Nursery) -> None:
        async for info in self._recv:
            if self.room() and self._wanted() > 0:
                nursery.start_soon(self._dial, info.peer_id, list(info.addrs))

    def _wanted(self) -> int:
        return self.target_peers - len(self.host.get_connected_peers())

    async def run(self, interval: float = 2.0) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._immediate, nursery)
            while True:
                missing = self._wanted()
                if missing > 0 and self.room():
                    connected = set(self.host.get_connected_peers())
                    choices = [p for p in self.candidates
                               if p not in connected and p not in self._dialing and self.backoff(p) == 0]
                    random.shuffle(choices)
                    async with trio.open_nursery() as dials:
                        for pid in choices[:missing]:
                            dials.start_soon(self._dial, pid, self.candidates[pid])
                await trio.sleep(jittered(interval))
