"""p2p_fast.stack.patches.gossip_prune_backoff: stock py-libp2p's heartbeat prunes an oversized mesh without putting
the pruned peers in backoff, so a later heartbeat may graft one of them again at once (which that peer, backing off
after the PRUNE, takes for a GRAFT flood); patched, the pruned peers are in backoff and are not grafted again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub

from p2p_fast.stack import pubsub_guard
from p2p_fast.stack.patches.gossip_opportunistic_graft import graft_opportunistically_as_specified
from p2p_fast.stack.patches.gossip_prune_backoff import back_off_pruned_peers

TOPIC = "p2p-fast/prune-backoff-test"


@pytest.mark.parametrize("patched", [False, True], ids=["stock", "patched"])
def test_a_peer_pruned_by_the_heartbeat_is_not_grafted_again_within_its_backoff(patched):
    """A mesh of 8 (D 4, D_low 3, D_high 6) among 8 topic peers: the heartbeat prunes 4. Then 2 of the 4 kept
    peers leave the topic, so the mesh (2) is below D_low and the next heartbeat grafts: stock, it picks among the
    4 peers it has just pruned (they are all there is); patched, they are in backoff and nothing is grafted."""
    router = GossipSub(protocols=[PROTOCOL_ID_V11], degree=4, degree_low=3, degree_high=6, heartbeat_interval=1,
                       spam_protection_enabled=False, adaptive_gossip_enabled=False,
                       score_params=pubsub_guard.score_params())
    graft_opportunistically_as_specified(router)  # as the node runs it: only degree maintenance below
    peers = [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(8)]
    topic_peers = set(peers)
    router.pubsub = SimpleNamespace(peer_topics={TOPIC: topic_peers})  # what mesh maintenance reads of the Pubsub
    router.peer_protocol = {p: PROTOCOL_ID_V11 for p in peers}
    router.mesh[TOPIC] = set(peers)
    if patched:
        back_off_pruned_peers(router)

    _, to_prune = router.mesh_heartbeat()
    pruned = {p for p, topics in to_prune.items() if TOPIC in topics}
    assert len(pruned) == 4 and not pruned & router.mesh[TOPIC]

    for p in list(router.mesh[TOPIC])[:2]:  # two kept peers leave the topic
        topic_peers.discard(p)
        router.mesh[TOPIC].discard(p)
    to_graft, _ = router.mesh_heartbeat()
    regrafted = {p for p, topics in to_graft.items() if TOPIC in topics} & pruned
    if patched:
        assert not regrafted and all(router._check_back_off(p, TOPIC) for p in pruned)
    else:
        assert len(regrafted) == 2  # D - 2: two of the peers it pruned a heartbeat ago


def test_the_undo_restores_the_stock_heartbeat():
    router = GossipSub(protocols=[PROTOCOL_ID_V11], degree=4, degree_low=3, degree_high=6, heartbeat_interval=1,
                       spam_protection_enabled=False, adaptive_gossip_enabled=False)
    undo = back_off_pruned_peers(router)
    assert "mesh_heartbeat" in router.__dict__
    undo()
    assert "mesh_heartbeat" not in router.__dict__
