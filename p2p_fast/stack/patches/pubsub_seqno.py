"""A restarted node does not reuse its pubsub message sequence numbers (a per-instance patch).

Upstream: ``libp2p/pubsub/pubsub.py``, ``Pubsub.__init__`` (py-libp2p 0.8.1) starts ``self.counter`` at
``int(time.time())`` (seconds) and ``Pubsub.publish`` adds one per message. A node that published more messages
than it has lived seconds (a burst, or a steady rate above 1/s) reuses its earlier seqnos after a restart with the
same identity. GossipSub's equivocation check then sees the same from+seqno with other data: receivers deliver the
message locally but never forward it, and charge the origin -100 in its peer score, so a restarted bootstrap's
gossip stopped reaching most of the network. go-libp2p starts the counter at the time in nanoseconds
(go-libp2p-pubsub PR #53 discussion; rust-libp2p PR #3716 made the same change); no py-libp2p issue was found.

:func:`start_seqno_from_nanoseconds` does the same for one Pubsub we construct (``p2p_fast.stack.pubsub``): the
counter is a per-instance attribute with no constructor argument, so there is nothing process-wide to apply.
Shown by ``tests/stack/patches/test_pubsub_seqno.py``.
"""

from __future__ import annotations

import time
from typing import Any


def stock_seqno_start() -> int:
    """What py-libp2p 0.8.1 sets ``Pubsub.counter`` to when it is constructed (for the test showing the bug)."""
    return int(time.time())


def start_seqno_from_nanoseconds(pubsub: Any) -> None:
    """Seqnos ``time_ns() + n`` stay unique across restarts unless a node publishes over 10**9 msgs/s."""
    pubsub.counter = max(int(getattr(pubsub, "counter", 0)), time.time_ns())
