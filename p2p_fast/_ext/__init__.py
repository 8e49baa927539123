"""Hot paths of p2p-fast, each a Cython extension (``_xxx_c.pyx``) with a pure-Python twin (``_xxx_py.py``).

A selector module per concern (``msgid``, ``seen``, ``kclosest``, ``framing``) imports the compiled module unless
``P2P_FAST_NO_EXTENSIONS`` is set (non-empty, not ``"0"``), the interpreter is not CPython, or the module was not
built; then the twin serves. Both behave identically (``tests/ext`` runs every test against both).

``EXTENSIONS_ACTIVE`` is True when every concern runs compiled code; ``COMPILED`` tells them apart.
"""

from __future__ import annotations

from . import framing, kclosest, msgid, seen
from ._env import NO_EXTENSIONS
from .framing import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_UVARINT_LEN,
    YAMUX_HEADER_SIZE,
    FrameDecoder,
    FrameError,
    decode_uvarint,
    encode_frame,
    encode_uvarint,
    pack_yamux_header,
    unpack_yamux_header,
)
from .kclosest import KEY_SIZE, KClosestIndex, peer_key, xor_distance
from .msgid import ID_SIZE, message_id, message_id_bytes
from .seen import DEFAULT_BUCKETS, SeenCache, ValidationCache

COMPILED: dict[str, bool] = {
    "msgid": msgid.COMPILED,
    "seen": seen.COMPILED,
    "kclosest": kclosest.COMPILED,
    "framing": framing.COMPILED,
}
EXTENSIONS_ACTIVE: bool = all(COMPILED.values())

__all__ = [
    "COMPILED",
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_FRAME_SIZE",
    "EXTENSIONS_ACTIVE",
    "ID_SIZE",
    "KEY_SIZE",
    "MAX_UVARINT_LEN",
    "NO_EXTENSIONS",
    "YAMUX_HEADER_SIZE",
    "FrameDecoder",
    "FrameError",
    "KClosestIndex",
    "SeenCache",
    "ValidationCache",
    "decode_uvarint",
    "encode_frame",
    "encode_uvarint",
    "message_id",
    "message_id_bytes",
    "pack_yamux_header",
    "peer_key",
    "unpack_yamux_header",
    "xor_distance",
]
