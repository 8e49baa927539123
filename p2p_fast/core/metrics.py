"""Prometheus metrics of a node. One node per process, so the default registry is used (py-libp2p's own swarm,
ping, gossipsub and kad-dht metrics register there too, recorded by :mod:`p2p_fast.stack.patches.inline_metrics`,
and ``/metrics`` serves both)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PEERS = Gauge("p2p_peers", "Connected peers")
CONNECTIONS = Gauge("p2p_connections", "Open libp2p connections")
MESSAGES_IN = Counter("p2p_messages_in_total", "Gossip messages received", ["topic"])
MESSAGES_OUT = Counter("p2p_messages_out_total", "Gossip messages published", ["topic"])
MESSAGES_REJECTED = Counter("p2p_messages_rejected_total", "Messages rejected (malformed, unknown version)",
                            ["topic", "reason"])
MESSAGES_DROPPED = Counter("p2p_messages_dropped_total",
                           "Valid gossip messages dropped on this node (subscriber-behind: its buffer was full)",
                           ["topic", "reason"])
DIAL_FAILURES = Counter("p2p_dial_failures_total", "Failed dials", ["reason"])
PING_RTT = Histogram("p2p_ping_rtt_seconds", "Ping round-trip time to connected peers",
                     buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
PING_FAILURES = Counter("p2p_ping_failures_total", "Pings that failed or timed out")
CONNECTIONS_PRUNED = Counter("p2p_connections_pruned_total",
                             "Connections this node closed: watermark (connection manager above its high watermark), "
                             "unresponsive (liveness: no traffic and no ping answers)", ["reason"])
LIVENESS_CHECKS = Counter("p2p_liveness_checks_total",
                          "Liveness checks of a connected peer: traffic (it sent something since the last check, no "
                          "ping needed) or ping", ["how"])
DIALS_DEFERRED = Counter("p2p_dials_deferred_total",
                         "Dials not started: at the low watermark, the per-address backoff, or the dial rate limit",
                         ["reason"])
BOOTSTRAP_ROUNDS = Counter("p2p_bootstrap_rounds_total", "Bootstrap dialing rounds")
DHT_PEERS = Gauge("p2p_dht_routing_table_peers", "Peers in the Kademlia routing table")
UPTIME = Gauge("p2p_uptime_seconds", "Seconds since the node started")
NODE_INFO = Gauge("p2p_node_info", "Constant 1, labelled with the node's identity", ["peer_id", "role", "version"])


EVENT_SUBSCRIBERS = Gauge("p2p_event_subscribers", "Clients subscribed to GET /v1/events")
EVENT_OVERFLOWS = Counter("p2p_event_overflows_total",
                          "Event-stream subscribers dropped because they fell BUFFER events behind")
NODE_READY = Gauge("p2p_node_ready", "1 while /readyz answers 200 (bootstrapped and connected), else 0")
NODE_HEALTH = Gauge("p2p_node_health", "1 while a health check passes, else 0 (see Node.health_checks)", ["check"])
CPU_SHARE = Gauge("p2p_process_cpu_share", "This process's CPU use over the last second (1.0 = one core)")
SCHEDULER_LAG = Gauge("p2p_scheduler_lag_seconds", "How late the last 1 s trio.sleep woke up")
SHEDDING = Gauge("p2p_shedding_optional_work", "1 while the node sheds optional work under CPU pressure")
WORK_SHED = Counter("p2p_work_shed_total", "Optional work skipped under CPU pressure", ["kind"])
