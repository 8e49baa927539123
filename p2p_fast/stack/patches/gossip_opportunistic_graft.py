"""GossipSub grafts opportunistically as the spec says: once a minute, and only into a mesh whose peers score badly
(a per-instance patch: :func:`graft_opportunistically_as_specified` takes the router and returns its undo).

Upstream: ``libp2p/pubsub/gossipsub.py``, ``GossipSub.mesh_heartbeat`` -> ``_perform_opportunistic_grafting``
(py-libp2p 0.8.1) -- a bug: it runs on *every* heartbeat, for every topic whose mesh has at least ``D_low`` peers,
and grafts up to two non-mesh peers scoring at least ``max(median x 0.5, min x 1.1, gossip_threshold)`` -- on a quiet
network every score is 0, so that is any peer not in backoff. The mesh grows by two a second past ``D_high``, the
same heartbeat's successors prune it back to ``D`` (PRUNE with a backoff), and the pruned peers graft again: the
meshes never settle. In a 30-node network each node wrote up to 0.2 GRAFT and as many PRUNE a second at rest, and
most "GRAFT flood detected" warnings and penalties of a 100-node run came from that churn (3,290 in one run; 59-97
with this patch, 9 with ``gossip_prune_backoff`` too).

GossipSub v1.1 (and go-libp2p): opportunistic grafting runs every ``OpportunisticGraftTicks`` (60) heartbeats, and
only when the median score of the mesh is below ``opportunisticGraftThreshold``: it exists to get out of a mesh
taken over by poorly scoring peers, not to grow healthy meshes. The patch gates py-libp2p's own function with
exactly that (per topic): every ``GRAFT_TICKS`` heartbeats, and only when the median mesh score is below
``GRAFT_THRESHOLD``. Our scores are positive only for first deliveries (``p2p_fast.stack.pubsub_guard``) and
negative for penalties, so the threshold is 0: a quiet mesh is not a bad one. The undo removes the gate.
Shown by ``tests/stack/patches/test_gossip_opportunistic_graft.py``. No upstream issue was found.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Callable

GRAFT_TICKS = 60  # go-libp2p's GossipSubOpportunisticGraftTicks
GRAFT_THRESHOLD = 0.0  # opportunisticGraftThreshold: graft only into a mesh whose median score is below this


def graft_opportunistically_as_specified(router: Any, ticks: int = GRAFT_TICKS,
                                         threshold: float = GRAFT_THRESHOLD) -> Callable[[], None]:
    """From now on ``router`` grafts opportunistically into a topic's mesh only every ``ticks`` heartbeats and only
    when the mesh's median score is below ``threshold``. Returns the undo."""
    stock = router._perform_opportunistic_grafting
    calls: Counter[str] = Counter()  # per topic: heartbeats that reached opportunistic grafting

    def perform_opportunistic_grafting(topic: str, peers_to_graft: Any) -> int:
        calls[topic] += 1
        if calls[topic] % ticks:
            return 0
        scorer = router.scorer
        mesh = router.mesh.get(topic, ())
        if scorer is None or not mesh:
            return 0
        if statistics.median(scorer.score(p, [topic]) for p in mesh) >= threshold:
            return 0
        return stock(topic, peers_to_graft)

    router._perform_opportunistic_grafting = perform_opportunistic_grafting

    def undo() -> None:
        if router.__dict__.get("_perform_opportunistic_grafting") is perform_opportunistic_grafting:
            del router._perform_opportunistic_grafting

    return undo
