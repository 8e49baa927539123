"""Make ``/p2p-circuit`` addresses dialable through the ordinary swarm (``host.connect``, ``new_stream``).

py-libp2p 0.8.1 ships a working circuit relay v2 client (``CircuitV2Transport``) but cannot use it from the swarm;
each of these is shown by a test in ``tests/nat/test_libp2p_relay_bugs.py``:

1. ``Swarm.dial_peer`` drops every ``/p2p-circuit`` address ("this node has no relay transport"), whatever transports
   are registered, so ``host.connect(PeerInfo(peer, [circuit_addr]))`` always fails with "relay-only".
2. ``TCP.can_dial`` accepts ``/ip4/../tcp/../p2p/RELAY/p2p-circuit/p2p/PEER`` (it only looks for ``tcp``), so the
   transport manager routes circuit addresses to TCP, which dials the *relay* and fails the handshake on the peer ID.
3. ``CircuitV2Transport.dial`` returns an already upgraded ``SwarmConn`` where the swarm expects a raw connection,
   so registered as a transport it would fail every dial with "Expected an IRawConnection to upgrade".

4. Nothing stops a host from dialing *itself* (``host.connect(PeerInfo(own_id, own_addrs))`` connects, and two
   connections are filed under our own ID). Circuit dialing makes that easy to hit: a relay that is not connected to a
   peer it knows only by a circuit address *through itself* dials the relay -- itself. Both connections to ourselves
   then share one peer entry and their Noise streams get crossed (InvalidTag, seen on relays in the test bed).

Work-around: :class:`CircuitTransport` (here) returns the raw relayed connection and sorts ahead of TCP in the
transport manager (fixes 2 and 3). It is not a patch: a subclass we construct and register through the swarm's
public ``transport_manager.add_transport``, changing nothing of py-libp2p for anyone else. Fixes 1 and 4 change the
swarm's own ``dial_peer``, so they are a patch: :func:`p2p_fast.stack.patches.circuit_dialing.install_circuit_dialing`.
"""

from __future__ import annotations

import multiaddr
from libp2p.abc import IRawConnection
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.transport.exceptions import OpenConnectionError


class CircuitTransport(CircuitV2Transport):
    """``CircuitV2Transport`` shaped the way the swarm uses transports: ``dial`` returns the raw relayed stream and
    the swarm secures, multiplexes and registers it like any other connection."""

    def listen_order(self) -> int:
        """Sort ahead of TCP: the transport manager picks the first transport whose ``can_dial`` says yes, and TCP's
        says yes to circuit addresses too (bug 2)."""
        return -1

    async def dial(self, maddr: multiaddr.Multiaddr) -> IRawConnection:  # type: ignore[override]
        try:
            relay_ma, dest = self.parse_circuit_ma(maddr)
            relay_text = relay_ma.get_peer_id()
            if not relay_text:
                raise ValueError(f"{maddr} names no relay peer ID before /p2p-circuit")
            relay_id = ID.from_base58(str(relay_text))
        except ValueError as exc:
            raise OpenConnectionError(str(exc)) from exc
        if self.host.get_id() in (relay_id, dest):
            raise OpenConnectionError(f"{maddr}: we cannot relay to ourselves or dial ourselves")
        try:
            return await self.dial_peer_info(PeerInfo(dest, [maddr]), relay_info=PeerInfo(relay_id, [relay_ma]))
        except ConnectionError as exc:
            raise OpenConnectionError(f"relay {relay_id} could not connect us to {dest}: {exc}") from exc

    # py-libp2p keeps reservations in private dicts of the base class; these two are the only readers and writers
    # outside it, so the rest of the package never touches them.
    def reservation_expires_at(self, relay_id: ID) -> float:
        """When our reservation on ``relay_id`` expires (wall-clock seconds); 0 when we hold none."""
        return float(self._reservations.get(relay_id, 0))

    def forget_reservation(self, relay_id: ID) -> None:
        """Drop our reservation on ``relay_id``, so py-libp2p's refresher stops renewing it."""
        self._reservations.pop(relay_id, None)
        self._reservation_proofs.pop(relay_id, None)
