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

Work-around, all in this module: :class:`CircuitTransport` returns the raw relayed connection and sorts ahead of TCP
in the transport manager (fixes 2 and 3), and :func:`install_circuit_dialing` wraps the swarm's ``dial_peer`` on this
one host so that, when a peer has circuit addresses, they are dialed too: right away if the peer has no direct
address, else after ``relay_delay`` seconds or as soon as the direct dials fail (go-libp2p also ranks relay
addresses after direct ones), and refuses to dial our own peer ID (4); circuit addresses through ourselves are
never dialed. Nothing else in the swarm changes.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, IRawConnection
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.transport.exceptions import OpenConnectionError

from p2p_fast.core.multiaddrs import is_relayed

log = logging.getLogger(__name__)

#: how long direct addresses get before circuit addresses are dialed too
RELAY_DIAL_DELAY = 1.0


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


def install_circuit_dialing(host: IHost, transport: CircuitTransport, dial_timeout: float,
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
