# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled gossip message ids: XXH64 (seed 0), written from the public xxHash spec and streamed over the fields.

Same id as ``_msgid_py`` (which calls the ``xxhash`` package): the canonical big-endian XXH64 digest of
``u32be(len(from_id)) || from_id || u32be(len(seqno)) || seqno || data``. Streaming avoids building that
concatenation; the three buffers are hashed in place (``bytes`` without even a buffer request).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from ._view cimport View, view_acquire, view_release

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #define P2PF_P1 0x9E3779B185EBCA87ULL
    #define P2PF_P2 0xC2B2AE3D27D4EB4FULL
    #define P2PF_P3 0x165667B19E3779F9ULL
    #define P2PF_P4 0x85EBCA77C2B2AE63ULL
    #define P2PF_P5 0x27D4EB2F165667C5ULL
    static inline uint64_t p2pf_le64(const uint8_t *p) {
        uint64_t v; memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    static inline uint32_t p2pf_le32(const uint8_t *p) {
        uint32_t v; memcpy(&v, p, 4);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        return v;
    }
    """
    const uint64_t P1 "P2PF_P1"
    const uint64_t P2 "P2PF_P2"
    const uint64_t P3 "P2PF_P3"
    const uint64_t P4 "P2PF_P4"
    const uint64_t P5 "P2PF_P5"
    uint64_t le64 "p2pf_le64" (const uint8_t *p) noexcept nogil
    uint32_t le32 "p2pf_le32" (const uint8_t *p) noexcept nogil

ID_SIZE = 8

cdef struct XXH64State:
    uint64_t total
    uint64_t v1, v2, v3, v4
    uint8_t mem[32]
    size_t memsize


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc += lane * P2
    return _rotl(acc, 31) * P1


cdef inline uint64_t _merge(uint64_t acc, uint64_t v) noexcept nogil:
    acc ^= _round(0, v)
    return acc * P1 + P4


cdef inline void _stripe(XXH64State *s, const uint8_t *p) noexcept nogil:
    s.v1 = _round(s.v1, le64(p))
    s.v2 = _round(s.v2, le64(p + 8))
    s.v3 = _round(s.v3, le64(p + 16))
    s.v4 = _round(s.v4, le64(p + 24))


cdef inline void _init(XXH64State *s) noexcept nogil:
    s.total = 0
    s.v1 = P1 + P2
    s.v2 = P2
    s.v3 = 0
    s.v4 = 0 - P1
    s.memsize = 0


cdef void _update(XXH64State *s, const uint8_t *p, size_t n) noexcept nogil:
    cdef const uint8_t *end = p + n
    cdef size_t fill
    s.total += n
    if s.memsize + n < 32:
        memcpy(s.mem + s.memsize, p, n)
        s.memsize += n
        return
    if s.memsize:
        fill = 32 - s.memsize
        memcpy(s.mem + s.memsize, p, fill)
        _stripe(s, s.mem)
        p += fill
        s.memsize = 0
    while p + 32 <= end:
        _stripe(s, p)
        p += 32
    if p < end:
        s.memsize = end - p
        memcpy(s.mem, p, s.memsize)


cdef uint64_t _digest(XXH64State *s) noexcept nogil:
    cdef uint64_t h
    cdef const uint8_t *p = s.mem
    cdef const uint8_t *end = s.mem + s.memsize
    if s.total >= 32:
        h = _rotl(s.v1, 1) + _rotl(s.v2, 7) + _rotl(s.v3, 12) + _rotl(s.v4, 18)
        h = _merge(h, s.v1)
        h = _merge(h, s.v2)
        h = _merge(h, s.v3)
        h = _merge(h, s.v4)
    else:
        h = s.v3 + P5  # v3 still holds the seed
    h += s.total
    while p + 8 <= end:
        h ^= _round(0, le64(p))
        h = _rotl(h, 27) * P1 + P4
        p += 8
    if p + 4 <= end:
        h ^= <uint64_t>le32(p) * P1
        h = _rotl(h, 23) * P2 + P3
        p += 4
    while p < end:
        h ^= p[0] * P5
        h = _rotl(h, 11) * P1
        p += 1
    h ^= h >> 33
    h *= P2
    h ^= h >> 29
    h *= P3
    h ^= h >> 32
    return h


cdef inline void _update_prefixed(XXH64State *s, const uint8_t *p, size_t n) noexcept nogil:
    cdef uint8_t lenbuf[4]
    lenbuf[0] = <uint8_t>(n >> 24)
    lenbuf[1] = <uint8_t>(n >> 16)
    lenbuf[2] = <uint8_t>(n >> 8)
    lenbuf[3] = <uint8_t>n
    _update(s, lenbuf, 4)
    _update(s, p, n)


cdef bytes _message_id(object from_id, object seqno, object data):
    cdef View f, q, d
    cdef XXH64State s
    cdef uint64_t h
    cdef bytes out
    cdef uint8_t *o
    cdef int i
    f.held = q.held = d.held = False
    try:
        view_acquire(from_id, &f)
        view_acquire(seqno, &q)
        view_acquire(data, &d)
        if <size_t>f.len > 0xFFFFFFFFUL or <size_t>q.len > 0xFFFFFFFFUL:
            raise ValueError("from_id and seqno must be shorter than 2**32 bytes")
        _init(&s)
        _update_prefixed(&s, f.ptr, f.len)
        _update_prefixed(&s, q.ptr, q.len)
        _update(&s, d.ptr, d.len)
        h = _digest(&s)
    finally:
        view_release(&d)
        view_release(&q)
        view_release(&f)
    out = PyBytes_FromStringAndSize(NULL, 8)
    o = <uint8_t *>PyBytes_AS_STRING(out)
    for i in range(8):
        o[i] = <uint8_t>(h >> (56 - 8 * i))
    return out


def message_id_bytes(from_id, seqno, data):
    """message_id_bytes(from_id: bytes, seqno: bytes, data: bytes) -> bytes: the 8-byte id of these fields."""
    return _message_id(from_id, seqno, data)


def message_id(msg):
    """message_id(msg: rpc_pb2.Message) -> bytes: ``Pubsub(msg_id_constructor=message_id)``."""
    return _message_id(msg.from_id, msg.seqno, msg.data)
