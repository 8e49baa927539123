# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of ``_framing_py`` (see there for the wire rules): varints, length-prefixed frames, Yamux headers.

``FrameDecoder`` keeps pending bytes in one C buffer; when nothing is pending it decodes straight from the caller's
buffer and copies only the incomplete tail.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_Append
from cpython.long cimport PyLong_CheckExact
from cpython.number cimport PyNumber_Index
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from ._view cimport View, view_acquire, view_release

from ._errors import FrameError

DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024
MAX_UVARINT_LEN = 10
YAMUX_HEADER_SIZE = 12

cdef enum:
    NEED_MORE = 0
    OVERFLOW = -1
    NOT_MINIMAL = -2

cdef str _OVERFLOW = "varint overflows 64 bits"
cdef str _NOT_MINIMAL = "varint is not minimally encoded"


cdef inline Py_ssize_t _read_uvarint(const uint8_t *p, Py_ssize_t n, uint64_t *out) noexcept nogil:
    """Bytes consumed (> 0), NEED_MORE, OVERFLOW or NOT_MINIMAL for the varint at ``p[0:n]``."""
    cdef uint64_t value = 0
    cdef Py_ssize_t i
    cdef uint8_t byte
    if n > 10:
        n = 10
    for i in range(n):
        byte = p[i]
        if i == 9 and byte > 1:
            return OVERFLOW
        value |= <uint64_t>(byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if byte == 0 and i > 0:
                return NOT_MINIMAL
            out[0] = value
            return i + 1
    return NEED_MORE


cdef inline Py_ssize_t _uvarint_size(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline void _write_uvarint(uint8_t *o, uint64_t v) noexcept nogil:
    while v >= 0x80:
        o[0] = <uint8_t>(v | 0x80)
        v >>= 7
        o += 1
    o[0] = <uint8_t>v


cdef inline str _varint_error(Py_ssize_t code):
    return _OVERFLOW if code == OVERFLOW else _NOT_MINIMAL


def encode_uvarint(value):
    """encode_uvarint(value: int) -> bytes: ValueError unless 0 <= value < 2**64, TypeError for non-integers."""
    cdef uint64_t v
    if not PyLong_CheckExact(value):
        value = PyNumber_Index(value)  # Cython's C conversion would truncate a float
    try:
        v = value
    except OverflowError:
        raise ValueError(f"uvarint value out of range [0, 2**64): {value}") from None
    cdef Py_ssize_t n = _uvarint_size(v)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    _write_uvarint(<uint8_t *>PyBytes_AS_STRING(out), v)
    return out


def decode_uvarint(data, Py_ssize_t offset=0):
    """decode_uvarint(data, offset: int = 0) -> (value, end): FrameError if malformed or truncated."""
    cdef View v
    cdef uint64_t value = 0
    cdef Py_ssize_t used
    view_acquire(data, &v)
    try:
        if offset < 0 or offset > v.len:
            raise ValueError(f"offset {offset} out of range for {v.len} bytes")
        used = _read_uvarint(v.ptr + offset, v.len - offset, &value)
        if used == NEED_MORE:
            raise FrameError(f"truncated varint: input ends after {v.len - offset} bytes without a final byte")
        if used < 0:
            raise FrameError(_varint_error(used))
        return value, offset + used
    finally:
        view_release(&v)


def encode_frame(payload, Py_ssize_t max_size=DEFAULT_MAX_FRAME_SIZE):
    """encode_frame(payload, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes: ``uvarint(len) || payload``."""
    cdef View v
    cdef Py_ssize_t head
    cdef bytes out
    cdef uint8_t *o
    view_acquire(payload, &v)
    try:
        if v.len > max_size:
            raise FrameError(f"frame of {v.len} bytes exceeds max_size {max_size}")
        head = _uvarint_size(<uint64_t>v.len)
        out = PyBytes_FromStringAndSize(NULL, head + v.len)
        o = <uint8_t *>PyBytes_AS_STRING(out)
        _write_uvarint(o, <uint64_t>v.len)
        memcpy(o + head, v.ptr, v.len)
        return out
    finally:
        view_release(&v)


@cython.final
cdef class FrameDecoder:
    """Incremental decoder of length-prefixed frames: ``feed(chunk)`` returns the frames completed so far."""

    cdef readonly Py_ssize_t max_size
    cdef uint8_t *_buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef object _error

    def __init__(self, Py_ssize_t max_size=DEFAULT_MAX_FRAME_SIZE):
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        self.max_size = max_size

    def __dealloc__(self):
        PyMem_Free(self._buf)

    @property
    def buffered(self):
        """Bytes held towards the next, incomplete frame."""
        return self._len

    cdef int _keep(self, const uint8_t *p, Py_ssize_t n) except -1:
        """Append ``p[0:n]`` to the pending bytes."""
        cdef Py_ssize_t cap
        cdef uint8_t *buf
        if self._len + n > self._cap:
            cap = max(self._len + n, 2 * self._cap, 256)
            buf = <uint8_t *>PyMem_Realloc(self._buf, cap)
            if buf == NULL:
                raise MemoryError()
            self._buf = buf
            self._cap = cap
        memcpy(self._buf + self._len, p, n)
        self._len += n
        return 0

    cdef Py_ssize_t _split(self, const uint8_t *p, Py_ssize_t n, list frames) except -1:
        """Append the complete frames at the start of ``p[0:n]`` to ``frames``; return the bytes they used."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t used
        cdef uint64_t length = 0
        while pos < n:
            used = _read_uvarint(p + pos, n - pos, &length)
            if used == NEED_MORE:
                break
            if used < 0:
                self._fail(_varint_error(used), frames)
            if length > <uint64_t>self.max_size:
                self._fail(f"frame of {length} bytes exceeds max_size {self.max_size}", frames)
            if <uint64_t>(n - pos - used) < length:
                break
            PyList_Append(frames, PyBytes_FromStringAndSize(<const char *>p + pos + used, <Py_ssize_t>length))
            pos += used + <Py_ssize_t>length
        return pos

    cdef int _fail(self, str message, list frames) except -1:
        self._error = message
        self._len = 0
        raise FrameError(message, frames)

    def feed(self, data):
        """feed(data: bytes-like) -> list[bytes]: add ``data``; return the frames it completed, in order."""
        cdef View v
        cdef list frames = []
        cdef Py_ssize_t used
        if self._error is not None:
            raise FrameError(self._error)
        view_acquire(data, &v)
        try:
            if self._len == 0:
                used = self._split(v.ptr, v.len, frames)
                self._keep(v.ptr + used, v.len - used)
            else:
                self._keep(v.ptr, v.len)
                used = self._split(self._buf, self._len, frames)
                if used:
                    memmove(self._buf, self._buf + used, self._len - used)
                    self._len -= used
        finally:
            view_release(&v)
        if self._len == 0 and self._cap > 65536:  # a big frame went through: do not keep its buffer while idle
            PyMem_Free(self._buf)
            self._buf = NULL
            self._cap = 0
        return frames

    def finish(self):
        """finish() -> None: declare the end of input; FrameError if part of a frame is still buffered."""
        if self._error is not None:
            raise FrameError(self._error)
        if self._len:
            raise FrameError(f"truncated frame: input ended with {self._len} bytes of an incomplete frame")


def pack_yamux_header(type, flags, stream_id, length):
    """pack_yamux_header(type, flags, stream_id, length) -> bytes: the 12-byte header, version 0, big-endian."""
    cdef unsigned long long t = 0, f = 0, s = 0, n = 0
    if not (PyLong_CheckExact(type) and PyLong_CheckExact(flags)
            and PyLong_CheckExact(stream_id) and PyLong_CheckExact(length)):
        type = PyNumber_Index(type)  # floats are refused, not truncated
        flags = PyNumber_Index(flags)
        stream_id = PyNumber_Index(stream_id)
        length = PyNumber_Index(length)
    try:
        t = type
        f = flags
        s = stream_id
        n = length
    except OverflowError:
        t = 1 << 32  # out of range: reported below
    if t > 0xFF or f > 0xFFFF or s > 0xFFFFFFFFULL or n > 0xFFFFFFFFULL:
        raise ValueError(
            f"yamux header field out of range: type={type}, flags={flags}, stream_id={stream_id}, length={length}"
        )
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 12)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    o[0] = 0
    o[1] = <uint8_t>t
    o[2] = <uint8_t>(f >> 8)
    o[3] = <uint8_t>f
    o[4] = <uint8_t>(s >> 24)
    o[5] = <uint8_t>(s >> 16)
    o[6] = <uint8_t>(s >> 8)
    o[7] = <uint8_t>s
    o[8] = <uint8_t>(n >> 24)
    o[9] = <uint8_t>(n >> 16)
    o[10] = <uint8_t>(n >> 8)
    o[11] = <uint8_t>n
    return out


def unpack_yamux_header(buf, Py_ssize_t offset=0):
    """unpack_yamux_header(buf, offset: int = 0) -> (version, type, flags, stream_id, length)."""
    cdef View v
    cdef const uint8_t *p
    if offset < 0:
        raise ValueError(f"offset {offset} out of range")
    view_acquire(buf, &v)
    try:
        if v.len - offset < 12:
            raise FrameError(f"yamux header needs 12 bytes, got {max(v.len - offset, 0)}")
        p = v.ptr + offset
        return (
            p[0],
            p[1],
            (<uint16_t>p[2] << 8) | p[3],
            (<uint32_t>p[4] << 24) | (<uint32_t>p[5] << 16) | (<uint32_t>p[6] << 8) | p[7],
            (<uint32_t>p[8] << 24) | (<uint32_t>p[9] << 16) | (<uint32_t>p[10] << 8) | p[11],
        )
    finally:
        view_release(&v)
