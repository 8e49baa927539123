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
OFFERS_PER_ROUND = 16  # live peers offered to the connector each second
FULL_CHECK_EVERY = 30  # rounds (seconds) between looks at every peer's protocols for the DHT routing table


async def watch_peers(node: Node) -> None:
    """Every second: gauges, ``peer`` events for who came and went, new peers into the DHT routing table once
    Identify says they speak Kademlia, and a bounded sample of the live view offered to the connector."""
    from p2p_fast.app.node_events import emit_peer_changes

    assert node.host is not None and node.dht is not None and node.connector is not None
    host, dht, connector = node.host, node.dht, node.connector
    known: set[ID] = set()
    pending_kad: set[ID] = set()
    rounds = 0
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
        rounds += 1
        # New peers at once, everyone again every FULL_CHECK_EVERY rounds (a peer's protocols arrive with
        # Identify, after the connection): per-peer work every second was an idle cost that grew with peers.
        look_at = peers if rounds % FULL_CHECK_EVERY == 0 else fresh | (pending_kad & peers)
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
        live = node.book.live() if len(peers) < connector.target_peers else []
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
        await trio.sleep(1.0)


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
