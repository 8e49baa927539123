"""Hooks that put our hot paths into py-libp2p's Pubsub: the message-id function and the seen cache.

py-libp2p takes the message-id function as a constructor argument but has no hook for the seen cache, so we replace
``pubsub.seen_messages`` (and its O(n) ``validation_cache``) right after construction and stop the ones it built
(the old seen cache owns a sweeper thread).
"""

from __future__ import annotations

from typing import Any

from ._ext import SeenCache, ValidationCache, message_id


class _Tuning:
    def constructor_kwargs(self) -> dict[str, Any]:
        """The message id is part of our wire protocol: every node of a network must use the same function
        (XXH64 over from, seqno and data; see docs/protocol.md). Peers that use another one still receive full
        messages through the mesh, but cannot match our IHAVE/IWANT ids."""
        return {"msg_id_constructor": message_id}

    def after_construct(self, pubsub: Any, seen_ttl: float) -> None:
        old = pubsub.seen_messages
        pubsub.seen_messages = SeenCache(seen_ttl)
        stop = getattr(old, "stop", None)
        if stop is not None:
            stop()
        vc = pubsub.validation_cache
        pubsub.validation_cache = ValidationCache(getattr(vc, "ttl", 300), getattr(vc, "max_size", 1000))


tune_pubsub = _Tuning()
