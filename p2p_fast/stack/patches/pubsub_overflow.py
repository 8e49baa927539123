"""A topic's subscription buffer that counts what it drops, instead of one py-libp2p warning per message.

When a topic's subscriber falls behind, py-libp2p's ``Pubsub.notify_subscriptions`` drops each message that does
not fit the subscription buffer and logs ``fail to deliver message to subscription`` at WARNING, once per message:
under overload that is thousands of identical lines a second and no number an operator can alert on. GossipSub's
answer to a slow subscriber is to drop (go-libp2p does the same), so we keep the drop and make it visible:
``p2p_messages_dropped_total{topic, reason="subscriber-behind"}`` counts each one, and one warning per topic at
most every ``WARN_EVERY_S`` seconds says how many went since the last.

The hook is the send side of the topic's channel, which ``Pubsub`` keeps in ``subscribed_topics_send`` and only
ever calls ``send_nowait`` and ``aclose`` on.

Upstream: ``libp2p/pubsub/pubsub.py``, ``Pubsub.notify_subscriptions`` (py-libp2p 0.8.1) -- a limit (a log line per
dropped message, no counter); no upstream issue was found. A per-instance patch: :func:`count_overflow` takes the
Pubsub and a topic. Shown by ``tests/stack/patches/test_pubsub_overflow.py``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import trio

from p2p_fast.core import metrics

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0
REASON = "subscriber-behind"


class OverflowCountingSend:
    """Wraps a subscription's ``MemorySendChannel``: a full buffer drops the message and counts it."""

    def __init__(self, channel: trio.MemorySendChannel, topic: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._channel = channel
        self._topic = topic
        self._clock = clock
        self._counter = metrics.MESSAGES_DROPPED.labels(topic, REASON)
        self.dropped = 0
        self._unreported = 0
        self._warned_at = float("-inf")

    def send_nowait(self, msg: Any) -> None:
        try:
            self._channel.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1
            self._unreported += 1
            self._counter.inc()
            now = self._clock()
            if now - self._warned_at >= WARN_EVERY_S:
                log.warning("gossip topic %s: the subscriber is behind, %d message(s) dropped since the last report "
                            "(p2p_messages_dropped_total)", self._topic, self._unreported)
                self._warned_at, self._unreported = now, 0

    async def aclose(self) -> None:
        await self._channel.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def count_overflow(pubsub: Any, topic: str) -> OverflowCountingSend:
    """Put the counting wrapper on ``topic``'s subscription (call right after ``pubsub.subscribe``; idempotent)."""
    current = pubsub.subscribed_topics_send[topic]
    if isinstance(current, OverflowCountingSend):
        return current
    wrapped = OverflowCountingSend(current, topic)
    pubsub.subscribed_topics_send[topic] = wrapped
    return wrapped
