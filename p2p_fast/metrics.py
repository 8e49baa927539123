"""Prometheus metrics of a node. One node per process, so the default registry is used (py-libp2p's own swarm,
ping, gossipsub and kad-dht metrics register there too, and ``/metrics`` serves both)."""

from __future__ import annotations

from typing import Any

import trio
from prometheus_client import Counter, Gauge, Histogram

PEERS = Gauge("p2p_peers", "Connected peers")
CONNECTIONS = Gauge("p2p_connections", "Open libp2p connections")
MESSAGES_IN = Counter("p2p_messages_in_total", "Gossip messages received", ["topic"])
MESSAGES_OUT = Counter("p2p_messages_out_total", "Gossip messages published", ["topic"])
MESSAGES_REJECTED = Counter("p2p_messages_rejected_total", "Messages rejected (malformed, unknown version)",
                            ["topic", "reason"])
DIAL_FAILURES = Counter("p2p_dial_failures_total", "Failed dials", ["reason"])
PING_RTT = Histogram("p2p_ping_rtt_seconds", "Ping round-trip time to connected peers",
                     buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
PING_FAILURES = Counter("p2p_ping_failures_total", "Pings that failed or timed out")
BOOTSTRAP_ROUNDS = Counter("p2p_bootstrap_rounds_total", "Bootstrap dialing rounds")
DHT_PEERS = Gauge("p2p_dht_routing_table_peers", "Peers in the Kademlia routing table")
UPTIME = Gauge("p2p_uptime_seconds", "Seconds since the node started")
NODE_INFO = Gauge("p2p_node_info", "Constant 1, labelled with the node's identity", ["peer_id", "role", "version"])


async def consume_libp2p_metrics(channel: Any) -> None:
    """Drain py-libp2p's metric event channel into its Prometheus collectors.

    py-libp2p sends events with a blocking ``send`` on a 100-slot channel, so somebody must read it or the swarm
    stalls; its own consumer also starts HTTP servers on fixed ports, which we do not want. We reuse its collectors.
    """
    from libp2p.metrics.metrics import Metrics

    recorder = Metrics()
    dispatch = _dispatch_table(recorder)
    async for event in channel:
        handler = dispatch.get(type(event))
        if handler is not None:
            try:
                handler(event)
            except Exception:  # a metrics bug must never take the node down
                pass
        await trio.lowlevel.checkpoint()


def _dispatch_table(recorder: Any) -> dict[type, Any]:
    from libp2p.host.ping import PingEvent
    from libp2p.kad_dht.kad_dht import KadDhtEvent
    from libp2p.metrics.swarm import SwarmEvent
    from libp2p.pubsub.pubsub import GossipsubEvent

    return {
        PingEvent: recorder.ping.record,
        GossipsubEvent: recorder.gossipsub.record,
        KadDhtEvent: recorder.kad_dht.record,
        SwarmEvent: recorder.swarm.record,
    }
