"""The k peers closest to a key by XOR distance, without re-hashing or a full sort. Compiled when available.

See ``_kclosest_py`` for the semantics and for how to keep a ``KClosestIndex`` in sync with a kad-dht
``RoutingTable`` (subclass it; ``find_local_closest_peers(key, count)`` becomes ``index.closest_to_key``).
"""

from __future__ import annotations

from ._env import NO_EXTENSIONS

__all__ = ["COMPILED", "KEY_SIZE", "KClosestIndex", "peer_key", "xor_distance"]

COMPILED = False
if not NO_EXTENSIONS:
    try:
        from ._kclosest_c import KEY_SIZE, KClosestIndex, peer_key, xor_distance

        COMPILED = True
    except ImportError:  # not built: the twin serves
        pass
if not COMPILED:
    from ._kclosest_py import KEY_SIZE, KClosestIndex, peer_key, xor_distance
