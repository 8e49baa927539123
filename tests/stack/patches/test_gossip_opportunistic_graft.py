"""p2p_fast.stack.patches.gossip_opportunistic_graft: stock py-libp2p grafts two more peers into a healthy mesh on
every heartbeat, so the mesh overshoots ``D_high`` and is pruned back again and again; patched, a mesh grafts
opportunistically only every 60 heartbeats and only when its median score is below 0 (GossipSub v1.1, go-libp2p)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub

from p2p_fast.stack import pubsub_guard
from p2p_fast.stack.patches.gossip_opportunistic_graft import GRAFT_TICKS, graft_opportunistically_as_specified

TOPIC = "p2p-fast/graft-test"


def _router(n_peers: int = 16, mesh: int = 4) -> tuple[GossipSub, list[ID]]:
    """A real GossipSub with our score parameters whose Pubsub knows ``n_peers`` subscribed v1.1 peers, ``mesh`` of
    them in our mesh (D 4, D_low 3, D_high 6: our defaults)."""
    router = GossipSub(protocols=[PROTOCOL_ID_V11], degree=4, degree_low=3, degree_high=6, heartbeat_interval=1,
                       spam_protection_enabled=False, adaptive_gossip_enabled=False,
                       score_params=pubsub_guard.score_params())
    peers = [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(n_peers)]
    router.pubsub = SimpleNamespace(peer_topics={TOPIC: set(peers)})  # what mesh maintenance reads of the Pubsub
    router.peer_protocol = {p: PROTOCOL_ID_V11 for p in peers}
    router.mesh[TOPIC] = set(peers[:mesh])
    return router, peers


def _heartbeats(router: GossipSub, n: int) -> tuple[int, int, list[int]]:
    """``n`` heartbeats of mesh maintenance: (GRAFTs, PRUNEs) it would send, and the mesh size after each."""
    grafts = prunes = 0
    sizes = []
    for _ in range(n):
        to_graft, to_prune = router.mesh_heartbeat()
        grafts += sum(len(t) for t in to_graft.values())
        prunes += sum(len(t) for t in to_prune.values())
        sizes.append(len(router.mesh[TOPIC]))
    return grafts, prunes, sizes


@pytest.mark.parametrize("patched", [False, True], ids=["stock", "patched"])
def test_a_healthy_mesh_at_its_degree_stays_as_it_is(patched):
    """A mesh of D = 4 whose peers all score 0 (a quiet network), 12 more peers in the topic, 10 heartbeats.
    Stock: two grafts on the first heartbeat, two more on the next (8 > D_high), pruned back to 4 and so on, until
    every other peer is in backoff. Patched: nothing is sent and the mesh keeps its 4 peers."""
    router, _ = _router()
    if patched:
        graft_opportunistically_as_specified(router)
    grafts, prunes, sizes = _heartbeats(router, 10)
    if patched:
        assert (grafts, prunes, sizes) == (0, 0, [4] * 10)
    else:
        assert grafts >= 4 and prunes >= 4
        assert max(sizes) > 6  # past D_high


def test_a_mesh_of_badly_scoring_peers_gets_two_grafts_once_a_minute():
    """Every mesh peer penalized (median score below 0): the patched router grafts two well-scoring peers on the
    60th heartbeat, not before."""
    router, peers = _router()
    graft_opportunistically_as_specified(router)
    for p in peers[:4]:
        router.scorer.penalize_graft_flood(p, 30.0)  # behaviour penalty above the threshold: a negative score
    grafts, _, sizes = _heartbeats(router, GRAFT_TICKS - 1)
    assert grafts == 0 and sizes[-1] == 4
    grafts, _, sizes = _heartbeats(router, 1)
    assert grafts == 2 and sizes[-1] == 6


def test_the_undo_restores_stock_grafting():
    router, _ = _router()
    undo = graft_opportunistically_as_specified(router)
    undo()
    grafts, _, _ = _heartbeats(router, 1)
    assert grafts == 2
