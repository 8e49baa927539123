"""Connection manager: keep the number of connected peers between a low and a high watermark.

Every connected peer costs a node CPU and memory all the time (pings, GossipSub heartbeat bookkeeping, Yamux RTT
pings, buffers), so a network in which every node connects to every other costs O(N^2) in total and collapses as it
grows. Like go-libp2p's ``connmgr`` (``p2p/net/connmgr``), once a node holds more than ``high`` peers it closes
connections until ``low`` remain, and the connector stops dialing at ``low`` (:meth:`ConnManager.wants_more`). It
never closes a connection to a peer it needs:

- a **protected** peer: each protector is a narrow yes/no question with a name: ``bootstrap``/``relay`` (the entry
  point or relay this node depends on), ``tasks`` (a task running there or a task link open to it);
- a peer connected less than ``grace`` seconds ago: it has had no time to prove useful, and pruning fresh
  connections would turn a join storm into a dial/prune loop. Nor does it count towards ``high`` until then (see
  :func:`choose_prunes`).

Connections a node opens only for one exchange are closed when it ends (:meth:`ConnManager.transient`): a DHT
announcement dials the ~20 peers closest to its key, and left open they pushed every node of a 31-node network above
``high`` about 30 s later (measured: 336 of 528 dials in the first minute were DHT queries), a wave of pruning.

Among the rest it closes the least valuable first. A peer's value is what the valuers say; GossipSub mesh
membership counts one per topic whose mesh holds the peer, so mesh peers go last (closing one costs a graft round
and gossip latency). Mesh peers are valued rather than protected, as go-libp2p-pubsub tags them with a value (20
per topic) rather than protecting them: with several topics nearly every connected peer is in some topic's mesh
(measured: 5-6 of 7 peers per node with mesh degree 2-3), so protecting them all left the manager unable to get
below ``high``. Ties go to the idlest (fewest open streams), then the most recently connected, so long-lived links
(a stable topology) survive. The choice is :func:`choose_prunes`, a pure function tested without a network;
:class:`ConnManager` feeds it from the swarm every ``check_interval`` seconds (with jitter, so nodes started
together do not trim in lockstep).
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

import trio

from p2p_fast.core import metrics
from p2p_fast.stack.libp2p_internals import connection_opened_at

log = logging.getLogger(__name__)
P = TypeVar("P", bound=Hashable)
CLOSE_CONCURRENCY = 16  # connections a trim closes at once
CLOSE_TIMEOUT = 10.0  # seconds one close may take (a peer that stopped reading must not hold the trim)
Protector = Callable[[object], bool]  # "is this peer protected?": must be cheap and never block


@dataclass(frozen=True)
class Limits:
    """Watermarks (peers) and grace period (seconds); ``low <= high``."""

    low: int
    high: int
    grace: float

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError(f"connection limits need 0 <= low <= high, got low={self.low} high={self.high}")
        if self.grace < 0:
            raise ValueError(f"grace period must be >= 0, got {self.grace}")

    @classmethod
    def from_config(cls, low: int, high: int, grace: float, max_connections: int) -> "Limits":
        """The configured watermarks, capped by the hard connection cap (``node.max_connections``)."""
        high = min(high, max_connections)
        return cls(low=min(low, high), high=high, grace=grace)


@dataclass(frozen=True)
class PeerState:
    """What the policy needs to know about one connected peer."""

    connected_at: float  # seconds (same clock as ``now``) when its oldest open connection was made
    streams: int  # open streams over all its connections
    protected_by: str | None  # the first protector that claims it, else None
    value: int = 0  # higher is kept longer (e.g. the number of GossipSub topic meshes it is in)


def choose_prunes(peers: Mapping[P, PeerState], limits: Limits, now: float) -> list[P]:
    """The peers to disconnect: none while at most ``high`` peers are settled (connected for the grace period or
    longer), else enough unprotected settled peers to bring the settled ones down to ``low`` (fewer if too many are
    protected): least valuable, then idlest, then newest first.

    Peers still in their grace period are neither closed nor counted: most are one exchange's connections (a DHT
    announcement, an AutoNAT dial-back) that their dialer closes within seconds, and counting them made a burst of
    them close the settled peers, mesh peers among them, the only ones the trim may close. Those that stay open are
    settled peers a grace period later, and trimmed as such; ``node.max_connections`` bounds them meanwhile."""
    settled = [(p, s) for p, s in peers.items() if now - s.connected_at >= limits.grace]
    if len(settled) <= limits.high:
        return []
    excess = len(settled) - limits.low
    candidates = [(s.value, s.streams, -s.connected_at, i, p) for i, (p, s) in enumerate(settled)
                  if s.protected_by is None]
    candidates.sort(key=lambda c: c[:4])
    return [c[4] for c in candidates[:excess]]


class ConnManager:
    """Applies :func:`choose_prunes` to a live host (see the module doc)."""

    def __init__(self, host: object, limits: Limits, check_interval: float = 5.0) -> None:
        self.host = host
        self.limits = limits
        self.check_interval = check_interval
        self.protectors: list[tuple[str, Protector]] = []
        self.valuers: list[Callable[[object], int]] = []
        self.pruned = 0

    def protect(self, name: str, is_protected: Protector) -> None:
        """Never prune a peer for which ``is_protected(peer_id)`` is true; ``name`` is the reason logged."""
        self.protectors.append((name, is_protected))

    def value(self, valuer: Callable[[object], int]) -> None:
        """Add ``valuer(peer_id)`` to each peer's value: the least valuable are pruned first."""
        self.valuers.append(valuer)

    def value_of(self, peer: object) -> int:
        total = 0
        for valuer in self.valuers:
            try:
                total += valuer(peer)
            except Exception as exc:
                log.debug("valuer failed for %s: %r", peer, exc)
        return total

    def connected(self) -> int:
        return len(self.host.get_connected_peers())  # type: ignore[attr-defined]

    def wants_more(self) -> bool:
        """Whether dialing another peer is welcome: below ``low``. Discovery (connector, mDNS, adverts) asks."""
        return self.connected() < self.limits.low

    def protected_by(self, peer: object) -> str | None:
        for name, check in self.protectors:
            try:
                if check(peer):
                    return name
            except Exception as exc:  # a broken protector must not let its peers be pruned
                log.debug("protector %s failed for %s: %r", name, peer, exc)
                return name
        return None

    def snapshot(self) -> dict[object, PeerState]:
        """The connected peers as the policy sees them (connection times on the wall clock, as py-libp2p's
        swarm records them: :func:`p2p_fast.stack.libp2p_internals.connection_opened_at`)."""
        network = self.host.get_network()  # type: ignore[attr-defined]
        now = time.time()
        out: dict[object, PeerState] = {}
        for peer, conns in network.get_connections_map().items():
            if not conns:
                continue
            known = [t for t in map(connection_opened_at, conns) if t is not None]
            streams = 0
            for c in conns:
                try:
                    streams += len(c.get_streams())
                except Exception:
                    pass
            out[peer] = PeerState(connected_at=min(known) if known else now, streams=streams,
                                  protected_by=self.protected_by(peer), value=self.value_of(peer))
        return out

    async def trim(self) -> list[object]:
        """Close connections to the peers :func:`choose_prunes` picks; return them."""
        peers = self.snapshot()
        victims = choose_prunes(peers, self.limits, time.time())
        if not victims:
            return []
        protected = sum(1 for s in peers.values() if s.protected_by is not None)
        in_mesh = sum(1 for p in victims if peers[p].value > 0)
        now = time.time()
        young = sum(1 for s in peers.values() if now - s.connected_at < self.limits.grace)
        log.info("connection manager: %d peers (%d settled) > high %d; closing %d (%d of them mesh peers; %d peers "
                 "protected) to reach low %d", len(peers), len(peers) - young, self.limits.high, len(victims), in_mesh,
                 protected, self.limits.low)
        closed: list[object] = []
        limiter = trio.CapacityLimiter(CLOSE_CONCURRENCY)

        async def close(peer: object) -> None:
            async with limiter:
                if await self._close(peer, "watermark"):
                    closed.append(peer)

        # Concurrently: one close awaits the muxer, the notifees (GossipSub, the DHT, ours) and the socket, and on a
        # loaded machine 54 closes in a row held a bootstrap above `high` for two and a half minutes, into the time
        # the network should have been settled.
        async with trio.open_nursery() as nursery:
            for peer in victims:
                nursery.start_soon(close, peer)
        return closed

    async def _close(self, peer: object, reason: str) -> bool:
        """Close ``peer`` unless a protector claims it now: the choice was made before the previous closes awaited,
        and a task may have been assigned to it meanwhile. Returns whether it was closed."""
        if self.protected_by(peer) is not None:
            return False
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self.host.get_network().close_peer(peer)  # type: ignore[attr-defined]
        except Exception as exc:
            log.debug("closing %s failed: %r", peer, exc)
        metrics.CONNECTIONS_PRUNED.labels(reason).inc()
        self.pruned += 1
        return True

    @asynccontextmanager
    async def transient(self, keep: int) -> AsyncIterator[None]:
        """Close, when the block ends, the connections opened during it (e.g. by a DHT query), except to protected
        peers, GossipSub mesh peers and as many as needed to keep ``keep`` peers: they were dialed for one exchange,
        and kept open each costs both ends until the manager prunes it above ``high``."""
        before = set(self.host.get_connected_peers())  # type: ignore[attr-defined]
        try:
            yield
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._release(before, keep)

    async def _release(self, before: set[object], keep: int) -> None:
        connected = list(self.host.get_connected_peers())  # type: ignore[attr-defined]
        spare = len(connected) - keep
        for peer in connected:
            if spare <= 0:
                return
            if peer not in before and self.value_of(peer) == 0 and await self._close(peer, "transient"):
                spare -= 1

    async def run(self) -> None:
        while True:
            await trio.sleep(self.check_interval * random.uniform(0.8, 1.2))
            await self.trim()


def peers_of(ids: Iterable[object]) -> Protector:
    """A protector for a fixed or live collection of peer ids (re-read on every question)."""
    return lambda peer: peer in ids  # type: ignore[operator]


def mesh_value(router: object) -> Callable[[object], int]:
    """How many GossipSub topic meshes hold the peer (``router.mesh``: topic -> set of peer ids); 0 for FloodSub."""

    def value(peer: object) -> int:
        mesh: Mapping[str, Sequence[object]] = getattr(router, "mesh", None) or {}
        return sum(1 for members in mesh.values() if peer in members)

    return value
