"""Pure-Python twin of ``_framing_c``: unsigned varints, length-prefixed frames, the Yamux frame header.

Varints are protobuf/multiformats unsigned LEB128, at most 10 bytes, values below 2**64. Decoding rejects a
value of 2**64 or more ("overflows 64 bits"), a non-minimal encoding such as ``80 00`` ("not minimally encoded",
go-libp2p's msgio rejects those too) and, in ``decode_uvarint``, input that ends inside a varint ("truncated").
A frame is ``uvarint(len(payload)) || payload``. Every decoding fault raises ``FrameError`` (a ``ValueError``).

The Yamux header (https://github.com/hashicorp/yamux/blob/master/spec.md) is 12 bytes, big-endian:
version (u8, always 0), type (u8), flags (u16), stream id (u32), length (u32).
"""

from __future__ import annotations

import operator
import struct

from ._errors import FrameError

__all__ = [
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

DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024
MAX_UVARINT_LEN = 10
YAMUX_HEADER_SIZE = 12
_U64_LIMIT = 1 << 64
_yamux = struct.Struct(">BBHII")

_OVERFLOW = "varint overflows 64 bits"
_NOT_MINIMAL = "varint is not minimally encoded"


def encode_uvarint(value: int) -> bytes:
    """The varint encoding of ``0 <= value < 2**64``; ValueError outside that range, TypeError for non-integers."""
    value = operator.index(value)
    if value < 0 or value >= _U64_LIMIT:
        raise ValueError(f"uvarint value out of range [0, 2**64): {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_uvarint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it), or (-1, pos) if ``buf[pos:end]`` holds only the start of a varint."""
    value = 0
    shift = 0
    i = pos
    while i < end:
        byte = buf[i]
        if shift == 63 and byte > 1:
            raise FrameError(_OVERFLOW)
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            if byte == 0 and i - pos > 1:
                raise FrameError(_NOT_MINIMAL)
            return value, i
        shift += 7
    return -1, pos


def decode_uvarint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode the varint at ``data[offset:]``: (value, offset just past it). FrameError if malformed or truncated."""
    offset = operator.index(offset)
    with memoryview(data) as view:
        n = view.nbytes
        if offset < 0 or offset > n:
            raise ValueError(f"offset {offset} out of range for {n} bytes")
        with view.cast("B") as octets:
            value, end = _read_uvarint(octets, offset, n)
    if value < 0:
        raise FrameError(f"truncated varint: input ends after {n - offset} bytes without a final byte")
    return value, end


def encode_frame(payload: bytes | bytearray | memoryview, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """``uvarint(len(payload)) || payload``; FrameError if the payload is longer than ``max_size``."""
    max_size = operator.index(max_size)
    with memoryview(payload) as view:
        n = view.nbytes
        if n > max_size:
            raise FrameError(f"frame of {n} bytes exceeds max_size {max_size}")
        return encode_uvarint(n) + view.tobytes()


class FrameDecoder:
    """Incremental decoder of length-prefixed frames: ``feed(chunk)`` returns the frames completed so far.

    A frame longer than ``max_size`` is refused as soon as its length prefix is read. After a ``FrameError`` the
    decoder stays failed: every later ``feed`` raises the same message. The error's ``frames`` holds frames
    completed earlier in the failing call.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        max_size = operator.index(max_size)
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        self.max_size = max_size
        self._buf = bytearray()
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held towards the next, incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data``; return the frames it completed, in order."""
        if self._error is not None:
            raise FrameError(self._error)
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        n = len(buf)
        pos = 0
        try:
            while pos < n:
                length, start = _read_uvarint(buf, pos, n)
                if length < 0:
                    break
                if length > self.max_size:
                    raise FrameError(f"frame of {length} bytes exceeds max_size {self.max_size}")
                end = start + length
                if end > n:
                    break
                frames.append(bytes(buf[start:end]))
                pos = end
        except FrameError as exc:
            self._error = str(exc)
            buf.clear()
            raise FrameError(self._error, frames) from None
        del buf[:pos]
        return frames

    def finish(self) -> None:
        """Declare the end of input: FrameError if part of a frame is still buffered."""
        if self._error is not None:
            raise FrameError(self._error)
        if self._buf:
            raise FrameError(f"truncated frame: input ended with {len(self._buf)} bytes of an incomplete frame")


def pack_yamux_header(type: int, flags: int, stream_id: int, length: int) -> bytes:  # noqa: A002 - spec names
    """The 12-byte Yamux header, version 0. ValueError if a field does not fit its width, TypeError if not an int."""
    try:
        return _yamux.pack(0, type, flags, stream_id, length)
    except struct.error:
        for value in (type, flags, stream_id, length):
            operator.index(value)
        raise ValueError(
            f"yamux header field out of range: type={type}, flags={flags}, stream_id={stream_id}, length={length}"
        ) from None


def unpack_yamux_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, int, int, int]:
    """(version, type, flags, stream_id, length) from the 12 bytes at ``buf[offset:]``; FrameError if fewer."""
    offset = operator.index(offset)
    if offset < 0:
        raise ValueError(f"offset {offset} out of range")
    available = len(buf) - offset
    if available < YAMUX_HEADER_SIZE:
        raise FrameError(f"yamux header needs {YAMUX_HEADER_SIZE} bytes, got {max(available, 0)}")
    return _yamux.unpack_from(buf, offset)
