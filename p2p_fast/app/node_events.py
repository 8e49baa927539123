"""The node's ``peer`` and ``stats`` events (``GET /v1/events``); task events come from the dispatcher.

Kept out of ``node.py`` so the node only has narrow hooks: the peer watcher reports who came and went, the peer book
reports who identified itself, and ``stats_loop`` samples the node's own counters every ``STATS_EVERY`` seconds, only
while somebody subscribes to ``stats``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable

import trio

from p2p_fast.core import metrics

if TYPE_CHECKING:
    from libp2p.peer.id import ID

    from p2p_fast.app.node import Node
    from p2p_fast.protocols.presence import PeerRecord

STATS_EVERY = 2.0
MAX_WORKERS_IN_STATS = 200


def emit_peer_changes(node: Node, came: Iterable[ID], went: Iterable[ID]) -> None:
    bus = node.events
    now = time.time()
    for pid in came:
        try:
            doc = node.peer_doc(pid)
        except Exception:
            doc = {"peer_id": str(pid)}
        bus.emit("peer", dict(doc, event="connected", ts=now))
    for pid in went:
        rec = node.book.get(str(pid))
        bus.emit("peer", {"peer_id": str(pid), "event": "disconnected", "role": rec.role if rec else "?",
                          "capabilities": rec.capabilities if rec else [], "ts": now})


def emit_identified(node: Node, rec: PeerRecord) -> None:
    node.events.emit("peer", {"peer_id": rec.peer_id, "event": "identified", "role": rec.role,
                              "capabilities": list(rec.capabilities), "slots": rec.slots, "addrs": list(rec.addrs),
                              "ts": time.time()})


def _samples(counter: Any, *labels: str) -> list[dict[str, Any]]:
    """The ``_total`` samples of a labelled Prometheus counter as ``[{label: value, ..., "count": n}]``."""
    out = []
    for family in counter.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                out.append({**{k: s.labels.get(k, "") for k in labels}, "count": int(s.value)})
    return out


def stats(node: Node) -> dict[str, Any]:
    """Cumulative counters and current gauges; the dashboard plots differences between two of these."""
    host = node.host
    conns = host.get_network().get_connections_map()
    doc: dict[str, Any] = {
        "ts": time.time(),
        "uptime_s": round(time.monotonic() - node.started_at, 1),
        "peers": len(conns),
        "connections": sum(len(c) for c in conns.values()),
        "live_peers": len(node.book.live()),
        "dht_routing_table": node.dht.get_routing_table_size() if node.dht is not None else 0,
        "messages_in": {d["topic"]: d["count"] for d in _samples(metrics.MESSAGES_IN, "topic")},
        "messages_out": {d["topic"]: d["count"] for d in _samples(metrics.MESSAGES_OUT, "topic")},
        "rejected": _samples(metrics.MESSAGES_REJECTED, "topic", "reason"),
        "dropped": _samples(metrics.MESSAGES_DROPPED, "topic", "reason"),
        "rtt_ms": {str(p): round(v * 1000, 2) for p, v in node.health.rtt.items()} if node.health else {},
        "event_subscribers": len(node.events.subscribers),
        "event_overflows": node.events.overflows,
    }
    slots, free, queued, load = node.load()
    doc["worker"] = {"slots": slots, "free": free, "queued": queued, "load": round(load, 3)}
    if node.tasks is not None:
        doc["tasks"] = node.tasks.counts()
    doc["workers"] = [{"peer_id": r.peer_id, "role": r.role, "capabilities": r.capabilities, "slots": r.slots,
                       "free": r.free_slots, "queued": r.queue_depth, "load": round(r.load, 3)}
                      for r in node.book.live()[:MAX_WORKERS_IN_STATS]]
    return doc


async def stats_loop(node: Node) -> None:
    bus = node.events
    while True:
        await trio.sleep(STATS_EVERY)
        if bus.wants("stats"):
            bus.emit("stats", stats(node))
