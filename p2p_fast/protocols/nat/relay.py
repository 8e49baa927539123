"""Circuit relay v2 on our nodes: the HOP service on relays (with resource limits), the STOP side everywhere.

The protocol is py-libp2p's ``CircuitV2Protocol``; :class:`RelayProtocol` only corrects two things (each shown by a
test in ``tests/nat/test_libp2p_relay_bugs.py``):

- **Inbound circuit address names ourselves as the relay.** ``handle_incoming_connection`` tags an accepted relayed
  connection ``/p2p/<our id>/p2p-circuit/p2p/<remote>``; the relay is the peer the STOP stream came from. We re-tag
  it ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<remote>`` so status and DCUtR see which relay carries it.
- **Reservations for somebody else.** ``_handle_reserve`` reserves a slot for the peer ID in the RESERVE message's
  optional ``peer`` field when present, so any peer can take (and use up) reservations in another peer's name. The
  spec reserves for the connection's remote peer; we drop the field before py-libp2p reads it.

Why this is not in :mod:`p2p_fast.stack.patches`: :class:`RelayProtocol` is a subclass we construct and run
ourselves; its overrides (``_handle_reserve`` is private in py-libp2p 0.8.1, covered by the patches' version guard)
change only this instance.
"""

from __future__ import annotations

import logging
import multiaddr
from libp2p.abc import INetStream
from libp2p.connection_types import ConnectionType
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits

from p2p_fast.core.multiaddrs import direct_transport_addr
from p2p_fast.stack.libp2p_internals import relay_reservations

log = logging.getLogger(__name__)

# Limits of the HOP service on `role: relay` nodes. A relayed connection carries a worker's gossip and task traffic
# until DCUtR replaces it, so circuits are allowed to live long enough for that (go-libp2p's 2 min / 128 KiB
# "limited relay" would cut every relayed gossip link within minutes), yet bounded: a relay is shared infrastructure.
RELAY_MAX_RESERVATIONS = 128          # peers holding a reservation at once
RELAY_RESERVATION_TTL = 3600          # s; clients refresh before it lapses
RELAY_MAX_CIRCUITS_PER_PEER = 16      # concurrent circuits to one reserved peer
RELAY_CIRCUIT_DURATION = 30 * 60      # s a circuit may live; the dialer re-dials (or is direct by then)
RELAY_CIRCUIT_BYTES = 64 * 1024 * 1024  # bytes per circuit, both directions together

RELAY_LIMITS = RelayLimits(
    duration=RELAY_CIRCUIT_DURATION,
    data=RELAY_CIRCUIT_BYTES,
    max_circuit_conns=RELAY_MAX_CIRCUITS_PER_PEER,
    max_reservations=RELAY_MAX_RESERVATIONS,
    reservation_ttl=RELAY_RESERVATION_TTL,
)


class RelayProtocol(CircuitV2Protocol):
    """py-libp2p's circuit relay v2 (HOP when ``allow_hop``, STOP always) with the two corrections above."""

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        if msg.HasField("peer"):
            msg.ClearField("peer")
        await super()._handle_reserve(stream, msg)

    async def handle_incoming_connection(self, stream: INetStream, remote_peer_id: bytes) -> None:
        await super().handle_incoming_connection(stream, remote_peer_id)
        relay_id = stream.muxed_conn.peer_id
        remote = ID(remote_peer_id)
        relay_addr = direct_transport_addr(self.host, relay_id)
        prefix = f"{relay_addr}/p2p/{relay_id}" if relay_addr is not None else f"/p2p/{relay_id}"
        circuit = multiaddr.Multiaddr(f"{prefix}/p2p-circuit/p2p/{remote}")
        wrong = f"/p2p/{self.host.get_id()}/p2p-circuit"
        for conn in self.host.get_network().get_connections(remote):
            if any(str(a).startswith(wrong) for a in conn.get_transport_addresses()):
                conn.set_transport_info([circuit], ConnectionType.RELAYED)  # type: ignore[attr-defined]
        log.info("accepted relayed connection from %s via relay %s", remote, relay_id)

    # -- views ---------------------------------------------------------------------------------------------------
    def hop_counts(self) -> dict[str, int]:
        live = [r for r in relay_reservations(self.resource_manager) if not r.is_expired()]
        return {"reservations": len(live), "circuits": sum(r.active_connections for r in live)}
