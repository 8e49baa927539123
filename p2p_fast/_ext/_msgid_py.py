"""Pure-Python twin of ``_msgid_c``: gossip message ids as XXH64 through the ``xxhash`` package.

The id of a message is the 8-byte canonical (big-endian) XXH64 digest, seed 0, of::

    u32be(len(from_id)) || from_id || u32be(len(seqno)) || seqno || data

The length prefixes keep ``(b"ab", b"c")`` and ``(b"a", b"bc")`` apart. XXH64 is fast, not cryptographic: ids are
unique in practice (about 4e-8 odds of any collision among a million live ids) but a sender could craft a collision
with another message *it knows in advance*, which only lets it suppress a message it could have sent itself.
"""

from __future__ import annotations

import struct

from xxhash import xxh64_digest

__all__ = ["ID_SIZE", "message_id", "message_id_bytes"]

ID_SIZE = 8
_U32_MAX = 0xFFFFFFFF
_u32be = struct.Struct(">I").pack


def message_id_bytes(from_id: bytes, seqno: bytes, data: bytes) -> bytes:
    """The 8-byte id of a message with these fields (any bytes-like objects)."""
    nf = len(from_id)
    ns = len(seqno)
    if nf > _U32_MAX or ns > _U32_MAX:
        raise ValueError("from_id and seqno must be shorter than 2**32 bytes")
    return xxh64_digest(b"".join((_u32be(nf), from_id, _u32be(ns), seqno, data)))


def message_id(msg: object) -> bytes:
    """``Pubsub(msg_id_constructor=message_id)``: the id of an ``rpc_pb2.Message``."""
    return message_id_bytes(msg.from_id, msg.seqno, msg.data)  # type: ignore[attr-defined]
