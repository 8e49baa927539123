"""DCUtR (hole punching): py-libp2p's ``DCUtRProtocol`` with counters for status and a shorter relay grace period.

py-libp2p drives the upgrade itself: every 2 s it looks for peers we reach only through a relay and runs
``initiate_hole_punch`` (first a plain direct dial -- "unilateral upgrade" -- then the CONNECT/SYNC exchange and
simultaneous TCP dials from our listen port to the peer's NAT-predicted address). The peer that receives SYNC dials
too (``_handle_dcutr_stream``). After a verified direct connection it closes the relayed one after a grace period.

py-libp2p binds hole-punch dials to the *announced* addresses; the correction is a process-wide patch,
:mod:`p2p_fast.stack.patches.dcutr_listen_addrs` (applied with the others when the host is built).

Why a subclass here is not a patch: :class:`HolePuncher` is an instance we construct and run ourselves (py-libp2p
has no factory for it); its overrides, private methods of ``DCUtRProtocol`` included, change only this instance.
They depend on py-libp2p 0.8.1's method names, which the version guard of :mod:`p2p_fast.stack.patches` checks
before any host is built.

py-libp2p's loop drives hole punches from *both* ends of a relayed connection at once. Two simultaneous sessions
make each side dial twice from the same listen port (the second socket cannot bind the same 4-tuple) and can merge
two dials that both upgrade as responder -- a handshake nobody starts. So one side initiates: the one with the lower
peer ID (:meth:`HolePuncher.initiate_hole_punch` declines otherwise). Both ends compute the same answer from facts
they share, unlike the spec's "the side that accepted the relayed connection", which two peers relayed to each other
both ways (or one of whose relayed connections just closed) can see differently and then wait for each other. A peer
that never initiates (another implementation) is not waited for beyond :data:`DEFER_LIMIT` seconds.

The unilateral upgrade is skipped for a peer we know by a circuit address: it either holds a relay reservation
(its own AutoNAT found it unreachable) or its direct addresses already failed when we dialed it, so the plain dial
would only wait out the dial timeout before the hole punch could start.

We count what happens: ``attempts``/``successes`` are hole punches (the SYNC-timed dials, on either side),
``unilateral`` are upgrades where a plain direct dial sufficed. The grace period before the relayed connection is
closed drops from py-libp2p's 60 s to :data:`RELAY_CLOSE_GRACE`: new streams already prefer the direct connection
(the swarm ranks direct above relayed); streams still open on the relayed one are reset when it closes, and pubsub
reopens its stream on the direct one.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from typing import Any

import libp2p.relay.circuit_v2.dcutr as _dcutr
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

from p2p_fast.core.multiaddrs import direct_transport_addr, is_relayed

log = logging.getLogger(__name__)

RELAY_CLOSE_GRACE = 5.0
HOLE_PUNCH_DIAL_TIMEOUT = 5
DEFER_LIMIT = 20.0
AUTO_DRIVE_EVERY = 2.0  # as py-libp2p's loop


class HolePuncher(DCUtRProtocol):
    def __init__(self, host: Any, dial_timeout: int = HOLE_PUNCH_DIAL_TIMEOUT) -> None:
        super().__init__(host, dial_timeout=dial_timeout)
        self.attempts = 0
        self.successes = 0
        self.unilateral = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=32)
        self._deferred_since: dict[ID, float] = {}

    def _should_initiate(self, peer_id: ID) -> bool:
        if str(self.host.get_id()) < str(peer_id):
            return True
        first = self._deferred_since.setdefault(peer_id, time.monotonic())
        return time.monotonic() - first > DEFER_LIMIT

    async def _auto_drive_loop(self) -> None:
        """Drive hole punches toward peers we reach only through a relay, as py-libp2p's loop does, at a cost that
        does not grow with direct peers.

        The stock loop renders every connection's addresses as text every 2 s to find the relayed ones: 8 % of an
        idle node's CPU with 19 direct peers (bench/RESULTS.md, "Idle cost per connection"). Whether a connection
        is relayed never changes, so we decide it once per connection object; the rest (skip peers in progress,
        upgraded or out of attempts, ``initiate_hole_punch`` for the others) is the same."""
        relayed: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
        while True:
            await trio.sleep(AUTO_DRIVE_EVERY)
            own = self.host.get_id()
            for peer_id, conns in list(self.host.get_network().get_connections_map().items()):
                if peer_id == own or peer_id in self._in_progress or peer_id in self._direct_connections:
                    continue
                if self._hole_punch_attempts.get(peer_id, 0) >= _dcutr.MAX_HOLE_PUNCH_ATTEMPTS:
                    continue
                if not any(self._is_relayed_conn(conn, relayed) for conn in conns):
                    continue
                try:
                    await self.initiate_hole_punch(peer_id)
                except trio.Cancelled:
                    raise
                except Exception as exc:
                    log.debug("hole punch to %s failed: %s", peer_id, exc)

    @staticmethod
    def _is_relayed_conn(conn: Any, cache: "weakref.WeakKeyDictionary[Any, bool]") -> bool:
        try:
            hit = cache.get(conn)
        except TypeError:  # not weak-referenceable: decide every time
            hit = None
        if hit is not None:
            return hit
        try:
            addrs = conn.get_transport_addresses()
        except Exception:
            return False
        value = any(is_relayed(a) for a in addrs)
        if addrs:  # no address yet: decide later
            try:
                cache[conn] = value
            except TypeError:
                pass
        return value

    def on_peer_disconnected(self, peer_id: ID) -> None:
        super().on_peer_disconnected(peer_id)
        self._deferred_since.pop(peer_id, None)

    async def initiate_hole_punch(self, peer_id: ID) -> bool:
        if not self._should_initiate(peer_id):
            return False
        self._deferred_since.pop(peer_id, None)
        return await super().initiate_hole_punch(peer_id)

    def _direct_addr(self, peer_id: ID) -> str | None:
        addr = direct_transport_addr(self.host, peer_id)
        return str(addr) if addr is not None else None

    def _record(self, peer_id: ID, kind: str, ok: bool) -> None:
        addr = self._direct_addr(peer_id) if ok else None
        self.events.append({"peer_id": str(peer_id), "kind": kind, "ok": ok, "addr": addr, "at": time.time()})
        log.info("DCUtR %s with %s: %s%s", kind, peer_id, "direct" if ok else "failed", f" via {addr}" if addr else "")

    async def _perform_hole_punch(self, peer_id: ID, addrs: list[Any], as_responder: bool = False) -> bool:
        self.attempts += 1
        ok = await super()._perform_hole_punch(peer_id, addrs, as_responder=as_responder)
        if ok:
            self.successes += 1
        self._record(peer_id, "hole-punch", ok)
        return ok

    async def _try_unilateral_upgrade(self, peer_id: ID) -> bool:
        # A peer we know by a circuit address holds a relay reservation (it found itself unreachable) or was
        # dialed through a relay because its direct addresses failed: a plain direct dial would only wait out
        # the dial timeout (a private address from outside its NAT is a black hole). Go straight to the punch.
        try:
            if any(is_relayed(a) for a in self.host.get_peerstore().addrs(peer_id)):
                return False
        except Exception:
            pass
        ok = await super()._try_unilateral_upgrade(peer_id)
        if ok:
            self.unilateral += 1
            self._record(peer_id, "unilateral", True)
        return ok

    async def _close_relayed_conns_after_grace(self, peer_id: ID, grace: float = RELAY_CLOSE_GRACE) -> None:
        await super()._close_relayed_conns_after_grace(peer_id, grace)

    def counts(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "successes": self.successes, "unilateral": self.unilateral,
                "recent": list(self.events)[-8:]}
