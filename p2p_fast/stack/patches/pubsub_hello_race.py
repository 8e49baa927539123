"""A topic joined or left while our pubsub stream to a new peer is being set up is announced to that peer.

``Pubsub._handle_new_peer`` builds the hello packet (the topics we are subscribed to), awaits its write, and only then
registers the peer. ``subscribe`` and ``unsubscribe`` announce the change to registered peers only. A subscribe in
that window reaches neither the hello nor the announcement: the peer never learns we joined and never forwards us the
topic's messages, for as long as the connection lives (an unsubscribe in it leaves the peer sending us a topic we
left). A node joins topics while its first connections come up, so the window is real: a gossip test's subscriber
that subscribed as the publisher's connection opened received none of its messages.

:func:`announce_late_subscriptions` wraps one Pubsub's ``get_hello_packet`` to note, in the registering task's
context, which topics the hello carried, and its ``_handle_new_peer`` to announce, once the peer is registered, what
changed since: through the peer's outbound queue, after the hello, in the order they were made, with stock's retry
on a full queue. Per-instance; returns its undo.

Upstream: ``libp2p/pubsub/pubsub.py``, ``Pubsub._handle_new_peer`` and ``Pubsub.subscribe`` (py-libp2p 0.8.1). Shown
by ``tests/stack/patches/test_pubsub_hello_race.py``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Callable

#: the topics in the hello packet built by this task's ``_handle_new_peer`` (None: none built)
_hello_topics: ContextVar[frozenset[str] | None] = ContextVar("pubsub_hello_topics", default=None)


def announce_late_subscriptions(pubsub: Any) -> Callable[[], None]:
    """Make ``pubsub`` announce to a new peer the topics joined or left while its hello was in flight (module doc).
    Returns the undo."""
    stock_hello = pubsub.get_hello_packet
    stock_new_peer = pubsub._handle_new_peer

    def get_hello_packet() -> Any:
        packet = stock_hello()
        _hello_topics.set(frozenset(sub.topicid for sub in packet.subscriptions))
        return packet

    async def handle_new_peer(peer_id: Any) -> None:
        token = _hello_topics.set(None)
        try:
            await stock_new_peer(peer_id)
            sent = _hello_topics.get()
        finally:
            _hello_topics.reset(token)
        queue = pubsub.peer_queues.get(peer_id)
        if sent is None or queue is None:
            return
        now = set(pubsub.topic_ids)
        changes = [(topic, True) for topic in sorted(now - sent)] + [(topic, False) for topic in sorted(sent - now)]
        for topic, subscribe in changes:
            packet, subopt = pubsub._build_announce_rpc(topic, subscribe)
            pubsub._enqueue_or_retry_announce(peer_id, queue, packet, subopt)

    pubsub.get_hello_packet = get_hello_packet
    pubsub._handle_new_peer = handle_new_peer

    def undo() -> None:
        for name, ours in (("get_hello_packet", get_hello_packet), ("_handle_new_peer", handle_new_peer)):
            if pubsub.__dict__.get(name) is ours:
                del pubsub.__dict__[name]

    return undo
