"""Pubsub hook 7 of ``pubsub_tuning``: a subscription buffer that holds a burst.

py-libp2p hands a received RPC's messages to the topic's subscription buffer (``SUBSCRIPTION_CHANNEL_SIZE``, 32
messages) before the subscriber's reader task can run, and drops what does not fit ("fail to deliver message to
subscription"). A few RPCs of merged messages (ours, or go's) arriving together overflow it although the reader
keeps up on average: one 64 KiB read of small messages hands over ~200 at once, and several reads can pass before
the reader's turn (128 lost ~1000 of 8000 messages in a 2 s flood at ~3500 msg/s,
``tests/perf/test_gossip_flood.py``). We make it ``SUBSCRIPTION_BUFFER`` messages, as many as can be in the hands
of push tasks at once (``pubsub_tasks.MAX_IN_FLIGHT``): what those tasks deliver fits unless the reader is behind on
average, and then GossipSub's answer (drop for a slow subscriber, as go-libp2p does) is the right one. The messages
are in memory either way (in the tasks or in the buffer).

Process-wide: the size is a module constant read by ``Pubsub.subscribe``, so :func:`apply` changes it for every
Pubsub of the process (they only drop less); :func:`revert` puts 32 back.

Upstream: ``libp2p/pubsub/pubsub.py``, ``SUBSCRIPTION_CHANNEL_SIZE`` (py-libp2p 0.8.1) -- a limit, not a bug; no
upstream issue was found. Shown by ``tests/stack/patches/test_pubsub_subscription_buffer.py``.
"""

from __future__ import annotations

import libp2p.pubsub.pubsub as _pubsub_mod

from p2p_fast.stack.patches._attrs import AttributePatch, Replacement
from p2p_fast.stack.patches.pubsub_tasks import MAX_IN_FLIGHT

SUBSCRIPTION_BUFFER = MAX_IN_FLIGHT
STOCK_SUBSCRIPTION_CHANNEL_SIZE = _pubsub_mod.SUBSCRIPTION_CHANNEL_SIZE

PATCH = AttributePatch(Replacement(_pubsub_mod, "SUBSCRIPTION_CHANNEL_SIZE",
                                   max(STOCK_SUBSCRIPTION_CHANNEL_SIZE, SUBSCRIPTION_BUFFER)))

apply = PATCH.apply
revert = PATCH.revert
