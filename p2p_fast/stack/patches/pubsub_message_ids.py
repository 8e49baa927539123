"""Pubsub hook 1 of ``pubsub_tuning``: message ids computed once per message, and our compiled seen and validation
caches.

py-libp2p asks for a message's id four or five times on its way through (seen check, validation cache, mark seen,
router, mcache), each time running the message-id function afresh. The function is a constructor argument
(``Pubsub(msg_id_constructor=...)``): :func:`constructor_kwargs` gives ours, XXH64 (compiled) wrapped in
:class:`_MemoMessageId`, which computes the id once per message object. The seen cache has no hook: after
construction, :func:`replace_caches` swaps ``pubsub.seen_messages`` for our ``SeenCache`` and stops the one
py-libp2p built (it owns a sweeper thread), and swaps the O(n) ``validation_cache`` for our ``ValidationCache``
(same TTL and size). GossipSub's message cache is keyed by ``from + seqno`` whatever the Pubsub's id function
(``MessageCache.put`` calls ``default_msg_id_fn``), so its IHAVE carried ids that no receiver's seen cache, keyed
by our ids, ever holds: every IHAVE was answered by an IWANT and the whole message sent again (in a 100-node
network, each advertisement went to each node about 18 times instead of 5). :func:`replace_caches` also gives
the router a :class:`MessageIdCache`, keyed by the Pubsub's id function.

Per-instance only: nothing of py-libp2p changes for a Pubsub we did not build this way.

Upstream: ``libp2p/pubsub/pubsub.py``, ``Pubsub.__init__`` (``seen_messages``, ``validation_cache``) and every
``_msg_id_constructor`` call (py-libp2p 0.8.1) -- a limit, not a bug (per-message work measured in
bench/RESULTS.md); no upstream issue was found. Shown by ``tests/stack/patches/test_pubsub_message_ids.py``.
"""

from __future__ import annotations

from typing import Any, Callable

from libp2p.pubsub.mcache import CacheEntry, MessageCache

from p2p_fast._ext import SeenCache, ValidationCache, message_id


class _MemoMessageId:
    """``message_id`` computed once per message object: the last message asked about and its id.

    pubsub asks for the id of the same message object several times in a row and never mutates a message after it
    is signed (the id covers ``from``, ``seqno`` and ``data``). Holding a reference to the last message keeps its
    identity from being reused by another object."""

    __slots__ = ("fn", "last_msg", "last_id")

    def __init__(self, fn: Callable[[Any], bytes]) -> None:
        self.fn = fn
        self.last_msg: Any = None
        self.last_id = b""

    def __call__(self, msg: Any) -> bytes:
        if msg is self.last_msg:
            return self.last_id
        mid = self.fn(msg)
        self.last_msg = msg
        self.last_id = mid
        return mid


class MessageIdCache(MessageCache):
    """GossipSub's message cache (IHAVE ids, IWANT answers), keyed by the Pubsub's message id."""

    def __init__(self, window_size: int, history_size: int, msg_id: Callable[[Any], bytes]) -> None:
        super().__init__(window_size, history_size)
        self.msg_id = msg_id

    def put(self, msg: Any) -> None:
        mid = self.msg_id(msg)
        if mid not in self.msgs:
            self.msgs[mid] = msg
            self.history[0].append(CacheEntry(mid, msg.topicIDs))


def constructor_kwargs() -> dict[str, Any]:
    """The message id is part of our wire protocol: every node of a network must use the same function
    (XXH64 over from, seqno and data; see docs/protocol.md). Peers that use another one still receive full
    messages through the mesh, but cannot match our IHAVE/IWANT ids."""
    return {"msg_id_constructor": _MemoMessageId(message_id)}


def replace_caches(pubsub: Any, seen_ttl: float) -> None:
    """Our seen cache (``seen_ttl`` seconds) and validation cache in place of the ones ``Pubsub.__init__`` built."""
    old = pubsub.seen_messages
    pubsub.seen_messages = SeenCache(seen_ttl)
    stop = getattr(old, "stop", None)
    if stop is not None:
        stop()
    vc = pubsub.validation_cache
    pubsub.validation_cache = ValidationCache(getattr(vc, "ttl", 300), getattr(vc, "max_size", 1000))
    router = pubsub.router
    mcache = getattr(router, "mcache", None)
    if isinstance(mcache, MessageCache) and not isinstance(mcache, MessageIdCache):
        if mcache.msgs:
            raise RuntimeError("replace_caches: the router's message cache is in use already")
        router.mcache = MessageIdCache(mcache.window_size, mcache.history_size, pubsub._msg_id_constructor)
