"""p2p_fast.stack.patches.gossip_lazy_degree: stock py-libp2p (adaptive gossip off, as we run it) sends IHAVE to at
least 6 non-mesh peers per topic and heartbeat, whatever we want; patched, to ``max(D_lazy, 25 % of them)``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2

from p2p_fast.stack.patches.gossip_lazy_degree import set_lazy_degree

TOPIC = "p2p-fast/lazy-test"


def _router(n_peers: int, mesh: int) -> GossipSub:
    """A real GossipSub whose Pubsub knows ``n_peers`` subscribed GossipSub peers, ``mesh`` of them in our mesh, and
    whose message cache holds one message of the topic (so the heartbeat has ids to gossip)."""
    router = GossipSub(protocols=[PROTOCOL_ID_V11], degree=4, degree_low=3, degree_high=6, heartbeat_interval=1,
                       spam_protection_enabled=False, adaptive_gossip_enabled=False)
    peers = [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(n_peers)]
    router.pubsub = SimpleNamespace(peer_topics={TOPIC: set(peers)})  # what the heartbeat reads of the Pubsub
    router.peer_protocol = {p: PROTOCOL_ID_V11 for p in peers}
    router.mesh[TOPIC] = set(peers[:mesh])
    msg = rpc_pb2.Message(from_id=peers[-1].to_bytes(), seqno=b"\x00" * 7 + b"\x01", data=b"x", topicIDs=[TOPIC])
    router.mcache.put(msg)
    return router


def _ihave_peers(router: GossipSub) -> set[ID]:
    gossip = router.gossip_heartbeat()
    assert all(set(topics) == {TOPIC} for topics in gossip.values())
    return set(gossip)


@pytest.mark.parametrize("patched", [False, True], ids=["stock", "patched"])
def test_a_heartbeat_gossips_ihave_to_d_lazy_non_mesh_peers(patched):
    """16 peers, 4 in the mesh: 12 candidates. Stock: 6 of them get IHAVE. Patched with D_lazy 3: 3 (25 % of 12 is
    also 3). Never a mesh peer."""
    router = _router(16, 4)
    if patched:
        set_lazy_degree(router, 3)
    chosen = _ihave_peers(router)
    assert not chosen & router.mesh[TOPIC]
    assert len(chosen) == (3 if patched else 6)


def test_the_gossip_factor_still_reaches_a_quarter_of_a_large_topic():
    """go-libp2p's formula: with 40 non-mesh peers a quarter (10) is more than D_lazy (2)."""
    router = _router(44, 4)
    set_lazy_degree(router, 2)
    assert len(_ihave_peers(router)) == 10


def test_lazy_degree_zero_gossips_to_nobody_on_a_small_topic_and_the_undo_restores_stock():
    router = _router(10, 4)  # 6 non-mesh: a quarter is 1
    undo = set_lazy_degree(router, 0)
    assert len(_ihave_peers(router)) == 1
    undo()
    assert len(_ihave_peers(router)) == 6
    with pytest.raises(ValueError, match="lazy_degree"):
        set_lazy_degree(router, -1)
