"""``/p2p-circuit`` addresses dialable through the ordinary swarm, and no dial of our own peer ID (a per-instance
patch: :func:`install_circuit_dialing` takes the host and returns its undo).

Upstream: ``libp2p/network/swarm.py``, ``Swarm.dial_peer`` (py-libp2p 0.8.1):

1. drops every ``/p2p-circuit`` address ("this node has no relay transport"), whatever transports are registered,
   so ``host.connect(PeerInfo(peer, [circuit_addr]))`` always fails with "relay-only";
4. dials *our own* peer ID when asked (``host.connect(PeerInfo(own_id, own_addrs))`` connects, and two connections
   are filed under our own ID). Circuit dialing makes that easy to hit: a relay that knows a peer only by a circuit
   address *through itself* dials the relay -- itself. Both connections then share one peer entry and their Noise
   streams get crossed (InvalidTag, seen on relays in the test bed).

(Bugs 2 and 3 of the same list -- ``TCP.can_dial`` claiming circuit addresses and ``CircuitV2Transport.dial``
returning an upgraded connection -- are corrected by the transport subclass
:class:`p2p_fast.protocols.nat.circuit.CircuitTransport`, registered through the public
``transport_manager.add_transport``.) No upstream issue was found for either.

The swarm has no hook for extra dial strategies, so the patch wraps ``dial_peer`` on this one swarm: when a peer
has circuit addresses they are dialed too, right away if the peer has no direct address, else after
``relay_delay`` seconds or as soon as the direct dials fail (go-libp2p also ranks relay addresses after direct
ones); our own peer ID is refused; circuit addresses through ourselves are never dialed. Nothing else in the swarm
changes, and the undo restores the class's ``dial_peer``.
Shown by ``tests/stack/patches/test_circuit_dialing.py``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import multiaddr
import trio
from libp2p.abc import IHost, INetConn
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID

from p2p_fast.core.multiaddrs import is_relayed

log = logging.getLogger(__name__)

#: how long direct addresses get before circuit addresses are dialed too
RELAY_DIAL_DELAY = 1.0


def circuit_addrs_of(host: IHost, peer_id: ID) -> list[multiaddr.Multiaddr]:
    """The peer's known circuit addresses, those through relays we are connected to first."""
    try:
        addrs = [a for a in host.get_peerstore().addrs(peer_id) if is_relayed(a)]
    except Exception:
        return []
    connected = {str(p) for p in host.get_connected_peers()}
    own = str(host.get_id())

    def relay_of(a: multiaddr.Multiaddr) -> str:
        relay = str(a).split("/p2p-circuit")[0].rsplit("/p2p/", 1)
        return relay[1] if len(relay) == 2 else ""

    seen: set[str] = set()
    out = []
    for a in sorted(addrs, key=lambda a: relay_of(a) not in connected):
        if relay_of(a) in ("", own):
            continue
        if str(a) not in seen:
            seen.add(str(a))
            out.append(a)
    return out


def install_circuit_dialing(host: IHost, transport: Any, dial_timeout: float,
                            relay_delay: float = RELAY_DIAL_DELAY) -> Callable[[], None]:
    """Register ``transport`` with the host's swarm and let ``dial_peer`` use circuit addresses. Returns an undo."""
    swarm: Any = host.get_network()
    manager = swarm.transport_manager
    manager.add_transport(transport)
    stock_dial_peer = swarm.dial_peer
    in_flight: dict[ID, trio.Event] = {}  # one circuit dial per peer at a time (the swarm's own dedupe is bypassed)

    async def dial_circuits(peer_id: ID, errors: list[BaseException]) -> INetConn | None:
        for addr in circuit_addrs_of(host, peer_id):
            try:
                with trio.fail_after(dial_timeout):
                    conn: INetConn = await swarm.dial_addr(addr, peer_id)
                log.info("connected to %s through relay: %s", peer_id, addr)
                return conn
            except (Exception, trio.TooSlowError) as exc:
                log.debug("circuit dial %s failed: %s", addr, exc)
                errors.append(exc)
        return None

    async def dial_peer(peer_id: ID) -> list[INetConn]:
        if peer_id == host.get_id():
            raise SwarmException("refusing to dial our own peer ID")
        while peer_id in in_flight:
            await in_flight[peer_id].wait()
        circuits = circuit_addrs_of(host, peer_id)
        if not circuits or swarm.get_connections(peer_id):
            return await stock_dial_peer(peer_id)
        in_flight[peer_id] = done = trio.Event()
        try:
            return await dial_direct_or_relayed(peer_id, circuits)
        finally:
            del in_flight[peer_id]
            done.set()

    async def dial_direct_or_relayed(peer_id: ID, circuits: list[multiaddr.Multiaddr]) -> list[INetConn]:
        try:
            direct = [a for a in host.get_peerstore().addrs(peer_id) if not is_relayed(a)]
        except Exception:
            direct = []
        result: list[INetConn] = []
        errors: list[BaseException] = []
        direct_done = trio.Event()

        async def try_direct(cancel: trio.CancelScope) -> None:
            try:
                result.extend(await stock_dial_peer(peer_id))
                cancel.cancel()
            except Exception as exc:
                errors.append(exc)
            finally:
                direct_done.set()

        async def try_relayed(cancel: trio.CancelScope) -> None:
            with trio.move_on_after(relay_delay):
                await direct_done.wait()
            if result:
                return
            conn = await dial_circuits(peer_id, errors)
            if conn is not None:
                result.append(conn)
                cancel.cancel()

        async with trio.open_nursery() as nursery:
            if direct:
                nursery.start_soon(try_direct, nursery.cancel_scope)
            else:
                direct_done.set()
            nursery.start_soon(try_relayed, nursery.cancel_scope)
        if result:
            return result
        raise SwarmException(f"unable to connect to {peer_id} directly or through {len(circuits)} relay address(es): "
                             + "; ".join(str(e) for e in errors[-3:]))

    swarm.dial_peer = dial_peer

    def undo() -> None:
        if swarm.__dict__.get("dial_peer") is dial_peer:
            del swarm.dial_peer
        try:
            manager._transports.remove(transport)
        except (AttributeError, ValueError):
            pass

    return undo
