"""A peer our heartbeat prunes from a mesh is in backoff on our side too (a per-instance patch:
:func:`back_off_pruned_peers` takes the router and returns its undo).

Upstream: ``libp2p/pubsub/gossipsub.py``, ``GossipSub.mesh_heartbeat`` (py-libp2p 0.8.1) -- a bug: when a mesh is
above ``D_high`` the heartbeat prunes it back to ``D`` and sends PRUNE, but records no backoff for the pruned peers
(a PRUNE *received* does). So the next heartbeat whose mesh falls below ``D_low`` may graft the very peer it just
pruned; that peer, which backs off for 60 s after a PRUNE, sees a GRAFT seconds after it and answers "GRAFT flood
detected": a penalty on the pruner's score and another PRUNE. In a join storm, where meshes overshoot as joiners
graft, that tore mesh links down for a minute at a time (the GRAFT flood warnings left in 100-node runs once
opportunistic grafting was fixed, ``gossip_opportunistic_graft``). GossipSub v1.1: "the pruning peer ... should
not re-graft the pruned peer before the backoff period expires" (go-libp2p adds the backoff in ``sendPrune``'s
callers' heartbeat path).

The patch wraps ``mesh_heartbeat`` on one router: every (peer, topic) it returns to prune gets the router's own
``_add_back_off`` with its default duration (``prune_back_off``), as a received PRUNE would. The undo removes the
wrapper. Shown by ``tests/stack/patches/test_gossip_prune_backoff.py``. No upstream issue was found.
"""

from __future__ import annotations

from typing import Any, Callable


def back_off_pruned_peers(router: Any) -> Callable[[], None]:
    """From now on ``router``'s heartbeat puts each peer it prunes from a topic's mesh in backoff for that topic.
    Returns the undo."""
    stock = router.mesh_heartbeat

    def mesh_heartbeat() -> Any:
        peers_to_graft, peers_to_prune = stock()
        for peer, topics in peers_to_prune.items():
            for topic in topics:
                router._add_back_off(peer, topic, False)
        return peers_to_graft, peers_to_prune

    router.mesh_heartbeat = mesh_heartbeat

    def undo() -> None:
        if router.__dict__.get("mesh_heartbeat") is mesh_heartbeat:
            del router.mesh_heartbeat

    return undo
