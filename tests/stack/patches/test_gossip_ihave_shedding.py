"""p2p_fast.stack.patches.gossip_ihave_shedding: while the node sheds optional work, GossipSub's heartbeat computes
no IHAVE gossip; stock computes it whatever the load."""

from __future__ import annotations

from collections import defaultdict

from libp2p.pubsub.gossipsub import GossipSub

from p2p_fast.stack.load_shed import Shedder
from p2p_fast.stack.patches.gossip_ihave_shedding import shed_gossip_ihave

TOPIC = "ihave-test"


class CountingGossipSub(GossipSub):
    """A real router whose IHAVE selection is counted and answers one peer to gossip to."""

    computed = 0

    def gossip_heartbeat(self):  # type: ignore[override]
        type(self).computed += 1
        stock = super().gossip_heartbeat()
        stock["peer"][TOPIC] = [b"msg-id"]
        return stock


def _router() -> CountingGossipSub:
    CountingGossipSub.computed = 0
    return CountingGossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12)


def test_ihave_gossip_is_computed_under_pressure_in_stock_and_skipped_while_shedding():
    shedder = Shedder()
    shedder.shedding = True
    router = _router()
    # Stock: the heartbeat asks for IHAVE gossip under pressure too.
    assert router.gossip_heartbeat() == {"peer": {TOPIC: [b"msg-id"]}}
    assert CountingGossipSub.computed == 1

    undo = shed_gossip_ihave(router, shedder)
    assert router.gossip_heartbeat() == defaultdict(dict)  # the type the heartbeat's _emit_control_msgs expects
    assert CountingGossipSub.computed == 1 and shedder.skipped["gossip-ihave"] == 1
    shedder.shedding = False
    assert router.gossip_heartbeat() == {"peer": {TOPIC: [b"msg-id"]}}
    assert CountingGossipSub.computed == 2 and shedder.skipped["gossip-ihave"] == 1

    undo()
    assert "gossip_heartbeat" not in vars(router)  # the class's method serves again
    shedder.shedding = True
    assert router.gossip_heartbeat() == {"peer": {TOPIC: [b"msg-id"]}}
    assert CountingGossipSub.computed == 3
