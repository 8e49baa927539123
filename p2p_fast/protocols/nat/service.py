"""The NAT traversal behaviour of a node: reachability (AutoNAT), relay reservations and relayed addresses, relayed
dialing, hole punching (DCUtR), and the relay (HOP) service on ``role: relay``.

What runs where (``network.enable_relay: true``; with ``false`` none of this runs):

- every node: the STOP side of circuit relay v2 (accept relayed connections), dialing of ``/p2p-circuit``
  addresses (:mod:`.circuit`), an AutoNAT server (dial others back) and client (ask others to dial us back), DCUtR.
- ``role: relay``: also the HOP service with :data:`.relay.RELAY_LIMITS`.
- ``role: worker`` found **private** by AutoNAT: reserve a slot on up to :data:`WANTED_RELAYS` relays (those in
  ``network.relay_addrs``, then peers advertising role or capability ``relay``, then connected peers that speak
  HOP), and advertise ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<us>`` -- in Identify, the signed peer record and
  our capability advertisement. Reservations are re-taken when a relay connection drops, and given up when AutoNAT
  later finds us public.
- any node found private with ``network.dht_mode: auto`` switches its DHT to client mode (others cannot dial it to
  ask it things), and back to server mode when found public.

py-libp2p's ``BasicHost.get_addrs()`` cannot carry circuit addresses (it cuts them at the relay ID, also from an
``addrs_factory``), so our relayed addresses are appended by a per-instance patch,
:func:`p2p_fast.stack.patches.host_circuit_addrs.append_addrs`; dialing circuit addresses is another,
:func:`p2p_fast.stack.patches.circuit_dialing.install_circuit_dialing`. Both are undone when the service stops.
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Callable

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.identity.identify_push.identify_push import push_identify_to_peers
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast.core.config import NetworkSection
from p2p_fast.core.multiaddrs import direct_transport_addr, is_relayed, parse_peer_multiaddr
from p2p_fast.core.netif import ipv4_addresses
from p2p_fast.protocols.nat.autonat import AUTONAT_PROTOCOL_ID, AutoNAT
from p2p_fast.protocols.nat.circuit import CircuitTransport
from p2p_fast.protocols.nat.dcutr import HolePuncher
from p2p_fast.protocols.nat.relay import RELAY_LIMITS, RelayProtocol
from p2p_fast.protocols.presence import PeerBook
from p2p_fast.stack.patches.circuit_dialing import install_circuit_dialing
from p2p_fast.stack.patches.host_circuit_addrs import append_addrs
from p2p_fast.stack.pubsub import refresh_signed_record

log = logging.getLogger(__name__)

WANTED_RELAYS = 2            # reservations a private worker keeps (fewer if fewer relays exist)
AUTONAT_SERVERS_PER_ROUND = 3
AUTONAT_RETRY = 2.0          # s between rounds while reachability is unknown
# s between rounds once known: go-libp2p's AutoNAT refresh interval. Every minute cost each node six dial-back
# handshakes a minute (three asked, three served), each a fresh connection the requester upgrades and registers.
AUTONAT_INTERVAL = 900.0
AUTONAT_DIAL_TIMEOUT = 4.0   # s a server spends on one dial-back address
RELAY_CHECK_INTERVAL = 2.0   # s between reservation checks
RELAY_RETRY_BACKOFF = 10.0   # s before retrying a relay that refused or failed


@dataclass
class RelayReservation:
    relay_id: ID
    relay_addr: multiaddr.Multiaddr  # the relay's direct address we reach it at
    taken_at: float

    def circuit_addr(self, own_id: ID) -> multiaddr.Multiaddr:
        return multiaddr.Multiaddr(f"{self.relay_addr}/p2p/{self.relay_id}/p2p-circuit/p2p/{own_id}")


class NatService:
    """One per node; see the module doc. Public surface: :meth:`status`, :meth:`relayed_addrs`,
    :attr:`reachability`.

    It gets what it uses: the host, the ``network`` config section, the node's role, the peer book (relays that
    advertise themselves), the DHT (switched to client mode while we are private) and ``on_addrs_changed``, called
    when our relayed addresses change (the node re-advertises)."""

    def __init__(self, host: IHost, network: NetworkSection, role: str, book: PeerBook, dht: KadDHT | None,
                 on_addrs_changed: Callable[[], None] = lambda: None) -> None:
        self.host = host
        self.network = network
        self.role = role
        self.book = book
        self.dht = dht
        self.on_addrs_changed = on_addrs_changed
        self.hop_enabled = role == "relay"
        self.protocol = RelayProtocol(self.host, limits=RELAY_LIMITS, allow_hop=self.hop_enabled)
        # No CLIENT role: py-libp2p's transport would then take a reservation on every relay it dials *through*.
        roles = RelayRole.STOP | RelayRole.HOP if self.hop_enabled else RelayRole.STOP
        self.transport = CircuitTransport(self.host, self.protocol, RelayConfig(roles=roles, limits=RELAY_LIMITS))
        self.autonat = AutoNAT(self.host, serve=True, dial_timeout=AUTONAT_DIAL_TIMEOUT)
        self.dcutr = HolePuncher(self.host)
        self.reachability = "unknown"
        self.reservations: dict[ID, RelayReservation] = {}
        self._relay_backoff: dict[ID, float] = {}
        self._nursery: trio.Nursery | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def start(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await stack.enter_async_context(background_trio_service(self.protocol))
        await stack.enter_async_context(background_trio_service(self.dcutr))
        stack.callback(install_circuit_dialing(self.host, self.transport, self.network.connection_timeout))
        stack.callback(append_addrs(self.host, self.relayed_addrs))
        nursery.start_soon(self._autonat_loop)
        if self.role == "worker":
            nursery.start_soon(self._relay_loop)
        log.info("NAT traversal on: relay hop=%s, AutoNAT, DCUtR, circuit dialing", self.hop_enabled)

    # -- addresses ------------------------------------------------------------------------------------------------
    def relayed_addrs(self) -> list[multiaddr.Multiaddr]:
        own = self.host.get_id()
        return [r.circuit_addr(own) for r in self.reservations.values()]

    async def _addrs_changed(self) -> None:
        log.info("advertised relayed addresses: %s", " ".join(map(str, self.relayed_addrs())) or "none")
        self._refresh_signed_record()
        self.on_addrs_changed()
        await self._push_identify()

    def _refresh_signed_record(self) -> None:
        """Issue our new signed peer record now, and make pubsub send it from its next RPC on.

        Every pubsub RPC carries our signed record, and py-libp2p's Pubsub drops a whole incoming RPC -- published
        messages included -- when the record in it is older than one it already holds from that peer
        (``maybe_consume_signed_record`` returns False, ``continuously_read_stream`` skips the RPC). Once our
        addresses change, Identify (push) and the DHT hand out the new record at once, while
        ``p2p_fast.stack.patches.pubsub_local_record`` keeps sending its cached one for up to ``ADDRS_RECHECK_S``:
        peers then dropped our gossip for about a second after every reservation change
        (tests/nat/test_relay_loopback.py lost messages that way). We make the tuned pubsub re-check its addresses
        on its next RPC."""
        try:
            refresh_signed_record(self.host)
        except Exception as exc:
            log.debug("could not refresh our signed record: %s", exc)

    async def _push_identify(self) -> None:
        """Tell every connected peer our new addresses and protocols (Identify push; what py-libp2p's own host does
        when it starts listening on a new address)."""
        try:
            await push_identify_to_peers(self.host)
        except Exception as exc:
            log.debug("identify push failed: %s", exc)

    # -- reachability ---------------------------------------------------------------------------------------------
    def _direct_peers_with(self, protocol: str) -> list[ID]:
        out = []
        network = self.host.get_network()
        store = self.host.get_peerstore()
        for pid in self.host.get_connected_peers():
            try:
                if protocol not in store.get_protocols(pid):
                    continue
            except Exception:
                continue
            if any(not any(is_relayed(a) for a in c.get_transport_addresses()) for c in network.get_connections(pid)):
                out.append(pid)
        return out

    def _autonat_candidates(self) -> list[multiaddr.Multiaddr]:
        advertised = list(self.host.get_transport_addrs())
        announce = [multiaddr.Multiaddr(a) for a in self.network.announce_addrs]
        return self.autonat.candidate_addrs(advertised=announce or advertised, predict=not announce,
                                            local_ips=set(ipv4_addresses()) | {"127.0.0.1"})

    async def _autonat_loop(self) -> None:
        asked: dict[ID, float] = {}
        while True:
            servers = self._direct_peers_with(AUTONAT_PROTOCOL_ID)
            servers.sort(key=lambda p: asked.get(p, 0.0))
            servers = servers[:AUTONAT_SERVERS_PER_ROUND]
            if servers:
                candidates = self._autonat_candidates()
                timeout = AUTONAT_DIAL_TIMEOUT * max(1, len(candidates)) + 5.0
                async with trio.open_nursery() as queries:
                    for server in servers:
                        asked[server] = time.monotonic()
                        queries.start_soon(self.autonat.ask, server, candidates, timeout)
                self.autonat.update_status()
                await self._set_reachability(self.autonat.status_name())
            await trio.sleep(AUTONAT_RETRY if self.reachability == "unknown" or not servers else AUTONAT_INTERVAL)

    async def _set_reachability(self, value: str) -> None:
        if value == self.reachability:
            return
        log.info("reachability: %s -> %s", self.reachability, value)
        self.reachability = value
        dht = self.dht
        if dht is None or self.network.dht_mode != "auto" or value == "unknown":
            return
        wanted = DHTMode.CLIENT if value == "private" else DHTMode.SERVER
        if dht.mode != wanted:
            await dht.switch_mode(wanted)
            log.info("DHT switched to %s mode (we are %s)", wanted.name.lower(), value)
            await self._push_identify()  # peers learn we (no longer) serve the DHT protocol

    # -- reservations ---------------------------------------------------------------------------------------------
    def _relay_candidates(self) -> list[tuple[ID, list[multiaddr.Multiaddr]]]:
        out: list[tuple[ID, list[multiaddr.Multiaddr]]] = []
        seen: set[ID] = {self.host.get_id()}

        def add(pid: ID, addrs: list[multiaddr.Multiaddr]) -> None:
            if pid not in seen:
                seen.add(pid)
                out.append((pid, addrs))

        for text in self.network.relay_addrs:
            pa = parse_peer_multiaddr(text, require_peer_id=True)
            assert pa.peer_id is not None
            add(pa.peer_id, [pa.addr])
        for rec in self.book.live():
            if rec.role != "relay" and "relay" not in rec.capabilities:
                continue
            try:
                pid = ID.from_base58(rec.peer_id)
                addrs = [multiaddr.Multiaddr(a) for a in rec.addrs]
            except Exception:
                continue
            add(pid, [a for a in addrs if not is_relayed(a)])
        for pid in self._direct_peers_with(HOP_PROTOCOL_ID):
            add(pid, [])
        return out

    def _relay_connected(self, relay_id: ID) -> multiaddr.Multiaddr | None:
        return direct_transport_addr(self.host, relay_id)

    async def _reserve(self, relay_id: ID, addrs: list[multiaddr.Multiaddr]) -> bool:
        assert self._nursery is not None
        ok = False
        with trio.move_on_after(self.network.connection_timeout):
            try:
                if addrs or not self.host.get_network().get_connections(relay_id):
                    await self.host.connect(PeerInfo(relay_id, addrs))
                stream = await self.host.new_stream(relay_id, [HOP_PROTOCOL_ID])
                try:
                    ok = await self.transport.reserve(stream, relay_id, self._nursery)
                finally:
                    await stream.close()
            except Exception as exc:
                log.info("reservation on relay %s failed: %s", relay_id, exc)
        relay_addr = self._relay_connected(relay_id) if ok else None
        if relay_addr is None:
            self._relay_backoff[relay_id] = time.monotonic() + RELAY_RETRY_BACKOFF
            return False
        self.reservations[relay_id] = RelayReservation(relay_id, relay_addr, time.time())
        log.info("reservation on relay %s at %s", relay_id, relay_addr)
        return True

    async def _maintain_reservations(self) -> bool:
        changed = False
        now = time.time()
        for rid in list(self.reservations):
            expires = self.transport.reservation_expires_at(rid)
            if self._relay_connected(rid) is None or expires <= now:
                log.info("lost reservation on relay %s (connection gone or expired)", rid)
                del self.reservations[rid]
                changed = True
        if len(self.reservations) < WANTED_RELAYS:
            for rid, addrs in self._relay_candidates():
                if rid in self.reservations or self._relay_backoff.get(rid, 0.0) > time.monotonic():
                    continue
                if await self._reserve(rid, addrs):
                    changed = True
                if len(self.reservations) >= WANTED_RELAYS:
                    break
        return changed

    async def _relay_loop(self) -> None:
        while True:
            changed = False
            if self.reachability == "private":
                changed = await self._maintain_reservations()
            elif self.reachability == "public" and self.reservations:
                log.info("reachable directly: giving up %d relay reservation(s)", len(self.reservations))
                for rid in self.reservations:  # and stop py-libp2p's refresher from renewing them
                    self.transport.forget_reservation(rid)
                self.reservations.clear()
                changed = True
            if changed:
                await self._addrs_changed()
            await trio.sleep(RELAY_CHECK_INTERVAL)

    # -- view -----------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "reachability": self.reachability,
            "autonat": {"servers": dict(self.autonat.queries), "dialbacks_served": self.autonat.dialbacks_served,
                        "dialbacks_ok": self.autonat.dialbacks_ok},
            "reservations": [str(r) for r in self.reservations],
            "relayed_addrs": [str(a) for a in self.relayed_addrs()],
            "dcutr": self.dcutr.counts(),
        }
        if self.hop_enabled:
            doc["relay_service"] = self.protocol.hop_counts()
        return doc


async def start_nat_services(host: IHost, network: NetworkSection, role: str, book: PeerBook, dht: KadDHT | None,
                             stack: AsyncExitStack, nursery: trio.Nursery,
                             on_addrs_changed: Callable[[], None] = lambda: None) -> NatService | None:
    """Start NAT traversal (a :class:`NatService`) when ``network.enable_relay`` is on; None otherwise."""
    if not network.enable_relay:
        if role == "relay":
            log.warning("role relay with network.enable_relay: false -- this node relays nothing")
        return None
    service = NatService(host, network, role, book, dht, on_addrs_changed)
    await service.start(stack, nursery)
    return service
