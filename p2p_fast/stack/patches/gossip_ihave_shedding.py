"""GossipSub skips IHAVE gossip while the node sheds optional work (a per-instance patch: :func:`shed_gossip_ihave`
takes the router and returns its undo).

Upstream: ``libp2p/pubsub/gossipsub.py``, ``GossipSub.heartbeat`` (py-libp2p 0.8.1) -- a limit: each heartbeat asks
``gossip_heartbeat`` which peers get IHAVE gossip, and there is no setting to pause that under load. The mesh
still carries every message without it. No upstream issue was found.

The patch wraps ``gossip_heartbeat`` on one router: while ``shedder.allow("gossip-ihave")`` says no, it answers "no
gossip" (the empty mapping the heartbeat's ``_emit_control_msgs`` expects); mesh maintenance, fanout and
GRAFT/PRUNE go on as before. The decision is :class:`p2p_fast.stack.load_shed.Shedder`'s. The undo removes the
wrapper.
Shown by ``tests/stack/patches/test_gossip_ihave_shedding.py``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Protocol


class Allows(Protocol):
    def allow(self, kind: str) -> bool: ...


def shed_gossip_ihave(router: Any, shedder: Allows) -> Callable[[], None]:
    """From now on ``router`` sends no IHAVE gossip while ``shedder`` refuses ``gossip-ihave``. Returns the undo."""
    stock = router.gossip_heartbeat

    def gossip_heartbeat() -> Any:
        if not shedder.allow("gossip-ihave"):
            return defaultdict(dict)
        return stock()

    router.gossip_heartbeat = gossip_heartbeat

    def undo() -> None:
        if router.__dict__.get("gossip_heartbeat") is gossip_heartbeat:
            del router.gossip_heartbeat

    return undo
