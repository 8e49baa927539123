"""A new pubsub peer is sent our own recent messages only, in one RPC, not everything in the message cache.

When a peer's pubsub stream comes up (and again when its subscription arrives), py-libp2p's Pubsub calls
``GossipSub.send_recent_messages(peer, topic)``, which writes every message of the topic's gossip window (the last
``gossip_window`` heartbeats) to the peer, one RPC per message, whoever published it. It covers one race: a message
we published while the peer's stream was not registered yet never reached it. The GossipSub spec has no such
replay (go-libp2p has none), and for messages of other nodes it is pure cost: the peer gets them from its own mesh,
or through IHAVE/IWANT, and if they are new to it, it forwards them to its mesh again. In a join storm every new
connection (each worker opens 10-20) replayed each busy topic's window in both directions: at about ten
advertisements a second, some thirty RPCs per connection and side, processed and often forwarded again, on a
machine that was already the bottleneck.

:func:`replay_only_own` replaces one router's ``send_recent_messages``: it keeps the race covered (our own messages
of the window, at most ``MAX_REPLAYED``, newest last, in one RPC) and drops the rest. Per-instance; returns its
undo.

Upstream: ``libp2p/pubsub/gossipsub.py``, ``GossipSub.send_recent_messages``, called from ``Pubsub._replay_recent_
messages`` (py-libp2p 0.8.1). Shown by ``tests/stack/patches/test_pubsub_replay_own.py``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from libp2p.pubsub.pb import rpc_pb2

log = logging.getLogger(__name__)
MAX_REPLAYED = 16


def own_recent_messages(router: Any, topic: str) -> list[rpc_pb2.Message]:
    """Our own messages in ``topic``'s gossip window, at most ``MAX_REPLAYED`` (the newest)."""
    me = router.pubsub.my_id.to_bytes()
    msgs = [m for m in (router.mcache.get(mid) for mid in router.mcache.window(topic))
            if m is not None and m.from_id == me]
    return msgs[-MAX_REPLAYED:]


def replay_only_own(router: Any) -> Callable[[], None]:
    async def send_recent_messages(peer_id: Any, topic: str) -> None:
        pubsub = router.pubsub
        if pubsub is None or peer_id not in pubsub.peers:
            return  # not writable yet: Pubsub replays again once the stream is registered
        msgs = own_recent_messages(router, topic)
        scorer = router.scorer
        if scorer is not None:
            msgs = [m for m in msgs if scorer.allow_publish(peer_id, list(m.topicIDs))]
        if not msgs:
            return
        try:
            await pubsub.write_msg(pubsub.peers[peer_id], rpc_pb2.RPC(publish=msgs))
        except Exception:  # the peer went away: nothing to replay to (Pubsub would only log it too)
            log.debug("replaying %d own message(s) to %s failed", len(msgs), peer_id, exc_info=True)

    router.send_recent_messages = send_recent_messages

    def undo() -> None:
        if router.__dict__.get("send_recent_messages") is send_recent_messages:
            del router.send_recent_messages

    return undo
