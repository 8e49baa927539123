"""Gossip seen-cache and validation-result cache, O(1). Compiled when available, else the twin (``_seen_py``).

Plug into a py-libp2p ``Pubsub`` after constructing it::

    pubsub.seen_messages.stop()                      # the stock cache's sweeper thread
    pubsub.seen_messages = SeenCache(seen_ttl)
    pubsub.validation_cache = ValidationCache(validation_cache_ttl, validation_cache_size)
"""

from __future__ import annotations

from ._env import NO_EXTENSIONS

__all__ = ["COMPILED", "DEFAULT_BUCKETS", "SeenCache", "ValidationCache"]

COMPILED = False
if not NO_EXTENSIONS:
    try:
        from ._seen_c import DEFAULT_BUCKETS, SeenCache, ValidationCache

        COMPILED = True
    except ImportError:  # not built: the twin serves
        pass
if not COMPILED:
    from ._seen_py import DEFAULT_BUCKETS, SeenCache, ValidationCache
