"""Keep the node's gauges, the DHT routing table and the connector in step with who it is connected to, and dial
what mDNS finds. Application glue between the stack (host, DHT) and the protocols (presence, discovery)."""

from __future__ import annotations

import logging
import random
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core import metrics
from p2p_fast.protocols.discovery.connector import Connector

if TYPE_CHECKING:
    from p2p_fast.app.node import Node

log = logging.getLogger(__name__)
KAD_PROTOCOL = "/ipfs/kad/1.0.0"
OFFERS_PER_ROUND = 16  # live peers offered to the connector each round
FULL_CHECK_EVERY = 30.0  # seconds between looks at every peer's protocols for the DHT routing table
BUSY_EVERY = 1.0  # seconds between rounds while peers come and go, Identify is pending or peers are short
REST_EVERY = 4.0  # ... once QUIET_ROUNDS rounds in a row found none of that: an idle node's wake-ups
QUIET_ROUNDS = 5


async def watch_peers(node: Node) -> None:
    """Each round: gauges, ``peer`` events for who came and went, new peers into the DHT routing table once
    Identify says they speak Kademlia, and a bounded sample of the live view offered to the connector.

    A round a second while anything of that is happening, one every :data:`REST_EVERY` seconds once nothing has for
    :data:`QUIET_ROUNDS` rounds: at rest the round found nothing to do and cost an idle node ~0.2 ms a second, its
    largest timer (bench/RESULTS.md, "The idle node's timers")."""
    from p2p_fast.app.node_events import emit_peer_changes

    assert node.host is not None and node.dht is not None and node.connector is not None
    host, dht, connector = node.host, node.dht, node.connector
    known: set[ID] = set()
    pending_kad: set[ID] = set()
    full_check_at = time.monotonic() + FULL_CHECK_EVERY
    quiet = 0
    while True:
        peers = set(host.get_connected_peers())
        metrics.PEERS.set(len(peers))
        metrics.CONNECTIONS.set(sum(len(c) for c in host.get_network().get_connections_map().values()))
        metrics.UPTIME.set(time.monotonic() - node.started_at)
        metrics.DHT_PEERS.set(dht.get_routing_table_size())
        node.update_health_gauges()
        if peers != known:
            emit_peer_changes(node, peers - known, known - peers)
            for pid in known - peers:
                connector.note_closed(pid)
        fresh = peers - known
        if fresh and node.presence is not None:
            node.presence.poke()
        changed = peers != known or bool(pending_kad)
        # New peers at once, everyone again every FULL_CHECK_EVERY seconds (a peer's protocols arrive with
        # Identify, after the connection): per-peer work every second was an idle cost that grew with peers.
        if time.monotonic() >= full_check_at:
            full_check_at = time.monotonic() + FULL_CHECK_EVERY
            look_at = peers
        else:
            look_at = fresh | (pending_kad & peers)
        pending_kad.clear()
        for pid in look_at:
            if dht.routing_table.peer_in_table(pid):
                continue
            try:
                protocols = host.get_peerstore().get_protocols(pid)
            except Exception:
                continue
            if not protocols:
                pending_kad.add(pid)  # Identify not done yet: look again next round
            if KAD_PROTOCOL in protocols:
                try:
                    await dht.add_peer(pid)
                except Exception as exc:
                    log.debug("routing table refused %s: %s", pid, exc)
        # Candidates for the connector only while it is short of peers, and a bounded sample: parsing every
        # address of the view each second was a cost that grew with the network.
        short = len(peers) < connector.target_peers
        live = node.book.live() if short else []
        for rec in random.sample(live, min(len(live), OFFERS_PER_ROUND)):
            try:
                pid = ID.from_base58(rec.peer_id)
            except Exception:
                continue
            addrs = []
            for a in rec.addrs:
                try:
                    addrs.append(multiaddr.Multiaddr(a))
                except Exception:
                    continue
            connector.offer(pid, addrs)
        known = peers
        quiet = 0 if changed or short or pending_kad else quiet + 1
        await trio.sleep(BUSY_EVERY if quiet < QUIET_ROUNDS else REST_EVERY)


def start_mdns_bridge(connector: Connector, stack: AsyncExitStack) -> None:
    """py-libp2p's mDNS only fills the peerstore and emits an event; we dial what it finds (until ``stack`` closes)."""
    token = trio.lowlevel.current_trio_token()

    def on_found(info: PeerInfo) -> None:
        # Called on zeroconf's browser thread, not in trio: hop into the trio loop to queue the dial.
        addrs = [a for a in info.addrs if "/ip4/0.0.0.0/" not in str(a) and "/ip6/::/" not in str(a)]
        log.info("mDNS found %s at %s", info.peer_id, " ".join(map(str, addrs)) or "(no dialable address)")
        if not addrs:
            return
        try:
            trio.from_thread.run_sync(connector.offer_now, PeerInfo(info.peer_id, addrs), trio_token=token)
        except trio.RunFinishedError:
            pass

    peerDiscovery.register_peer_discovered_handler(on_found)
    stack.callback(peerDiscovery.unregister_peer_discovered_handler, on_found)
