"""GossipSub sends IHAVE gossip to ``D_lazy`` peers of our choosing (a per-instance patch: :func:`set_lazy_degree`
takes the router and returns its undo).

Upstream: ``libp2p/pubsub/gossipsub.py``, ``GossipSub._get_adaptive_gossip_peers_count`` (py-libp2p 0.8.1) -- a
limit: with adaptive gossip off (ours: docs/libp2p-pitfalls.md, pitfall 9) the number of peers a heartbeat sends
IHAVE to, per topic with ids in its gossip window, is ``max(6, 25 % of the topic's non-mesh peers)``: go-libp2p's
``D_lazy`` default of 6, with no argument to change it. At rest IHAVE was most of what a node wrote: in a 30-node
network, 2.4-4.8 of 4.4-7.7 pubsub RPCs a second per node, each about 0.7 ms of CPU between its writer and its
reader; the mesh itself carries every message, and presence has its own pulls (bench/RESULTS.md, "The idle node,
task by task"). No upstream issue was found.

The patch gives one router go-libp2p's own formula with our ``D_lazy``: ``max(lazy_degree, int(GOSSIP_FACTOR x
peers))``, ``GOSSIP_FACTOR`` being go's 0.25. The undo removes it.
Shown by ``tests/stack/patches/test_gossip_lazy_degree.py``.
"""

from __future__ import annotations

from typing import Any, Callable

GOSSIP_FACTOR = 0.25  # go-libp2p's GossipSubGossipFactor: the share of non-mesh peers gossiped to, at least D_lazy


def set_lazy_degree(router: Any, lazy_degree: int) -> Callable[[], None]:
    """From now on ``router`` gossips IHAVE to ``max(lazy_degree, 25 % of the non-mesh peers)`` peers per topic and
    heartbeat. Returns the undo."""
    if lazy_degree < 0:
        raise ValueError(f"lazy_degree must be >= 0, got {lazy_degree}")

    def gossip_peers_count(topic: str, total_peers: int) -> int:
        return max(lazy_degree, int(total_peers * GOSSIP_FACTOR))

    router._get_adaptive_gossip_peers_count = gossip_peers_count

    def undo() -> None:
        if router.__dict__.get("_get_adaptive_gossip_peers_count") is gossip_peers_count:
            del router._get_adaptive_gossip_peers_count

    return undo
