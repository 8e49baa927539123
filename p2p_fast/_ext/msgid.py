"""Gossip message ids: ``Pubsub(msg_id_constructor=message_id)``. Compiled when available, else the twin.

The id is the 8-byte XXH64 digest of ``u32be(len(from_id)) || from_id || u32be(len(seqno)) || seqno || data``
(details and the collision discussion in ``_msgid_py``).
"""

from __future__ import annotations

from ._env import NO_EXTENSIONS

__all__ = ["COMPILED", "ID_SIZE", "message_id", "message_id_bytes"]

COMPILED = False
if not NO_EXTENSIONS:
    try:
        from ._msgid_c import ID_SIZE, message_id, message_id_bytes

        COMPILED = True
    except ImportError:  # not built: the twin serves
        pass
if not COMPILED:
    from ._msgid_py import ID_SIZE, message_id, message_id_bytes
