"""Varints, length-prefixed frames and the Yamux frame header. Compiled when available, else ``_framing_py``.

Both implementations raise the same ``FrameError`` class (``_errors``), so ``except FrameError`` catches either.
"""

from __future__ import annotations

from ._env import NO_EXTENSIONS
from ._errors import FrameError

__all__ = [
    "COMPILED",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_UVARINT_LEN",
    "YAMUX_HEADER_SIZE",
    "FrameDecoder",
    "FrameError",
    "decode_uvarint",
    "encode_frame",
    "encode_uvarint",
    "pack_yamux_header",
    "unpack_yamux_header",
]

COMPILED = False
if not NO_EXTENSIONS:
    try:
        from ._framing_c import (
            DEFAULT_MAX_FRAME_SIZE,
            MAX_UVARINT_LEN,
            YAMUX_HEADER_SIZE,
            FrameDecoder,
            decode_uvarint,
            encode_frame,
            encode_uvarint,
            pack_yamux_header,
            unpack_yamux_header,
        )

        COMPILED = True
    except ImportError:  # not built: the twin serves
        pass
if not COMPILED:
    from ._framing_py import (
        DEFAULT_MAX_FRAME_SIZE,
        MAX_UVARINT_LEN,
        YAMUX_HEADER_SIZE,
        FrameDecoder,
        decode_uvarint,
        encode_frame,
        encode_uvarint,
        pack_yamux_header,
        unpack_yamux_header,
    )
