# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of ``_kclosest_py`` (see there for semantics and how to keep the index in sync with a DHT table).

Keys are stored as 4 big-endian-ordered ``uint64`` words per slot in one C array, so a 256-bit XOR distance is four
XORs and comparing two distances is a lexicographic compare of words. ``closest`` keeps a max-heap of the best k
candidates, ordered by (distance, slot), and usually rejects a peer on its first word alone.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

import hashlib

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline uint64_t p2pf_be64(const uint8_t *p) {
        uint64_t v; memcpy(&v, p, 8);
    #if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    """
    uint64_t be64 "p2pf_be64" (const uint8_t *p) noexcept nogil

cdef extern from "Python.h":
    object _PyLong_FromByteArray(const unsigned char *data, size_t n, int little_endian, int is_signed)

KEY_SIZE = 32

ctypedef struct Cand:
    uint64_t d[4]
    Py_ssize_t idx


cdef inline bint _less(const Cand *a, const Cand *b) noexcept nogil:
    cdef int i
    for i in range(4):
        if a.d[i] != b.d[i]:
            return a.d[i] < b.d[i]
    return a.idx < b.idx


cdef void _sift_down(Cand *h, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """Restore the max-heap below ``i``."""
    cdef Cand x = h[i]
    cdef Py_ssize_t c
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _less(&h[c], &h[c + 1]):
            c += 1
        if not _less(&x, &h[c]):
            break
        h[i] = h[c]
        i = c
    h[i] = x


cdef inline void _distance(Cand *c, const uint64_t *key, const uint64_t *t, Py_ssize_t idx) noexcept nogil:
    c.d[0] = key[0] ^ t[0]
    c.d[1] = key[1] ^ t[1]
    c.d[2] = key[2] ^ t[2]
    c.d[3] = key[3] ^ t[3]
    c.idx = idx


cdef void _select(const uint64_t *keys, Py_ssize_t n, const uint64_t *t, Cand *h, Py_ssize_t k) noexcept nogil:
    """Fill ``h[0:k]`` with the k smallest (distance, slot) pairs, ascending."""
    cdef Py_ssize_t i
    cdef Cand c
    for i in range(k):
        _distance(&h[i], keys + 4 * i, t, i)
    for i in range(k // 2 - 1, -1, -1):
        _sift_down(h, k, i)
    for i in range(k, n):
        if (keys[4 * i] ^ t[0]) > h[0].d[0]:
            continue  # farther on the first word: the common case
        _distance(&c, keys + 4 * i, t, i)
        if _less(&c, &h[0]):
            h[0] = c
            _sift_down(h, k, 0)
    for i in range(k - 1, 0, -1):
        c = h[0]
        h[0] = h[i]
        h[i] = c
        _sift_down(h, i, 0)


cdef int _load_key(object key, uint64_t *out, str what) except -1:
    if not PyBytes_Check(key):
        raise TypeError(f"{what} must be bytes, not {type(key).__name__}")
    if PyBytes_GET_SIZE(key) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {PyBytes_GET_SIZE(key)}")
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(key)
    cdef int i
    for i in range(4):
        out[i] = be64(p + 8 * i)
    return 0


def peer_key(peer):
    """peer_key(peer) -> bytes: ``sha256`` of the peer id bytes (``peer`` itself if bytes, else ``peer.to_bytes()``)."""
    return hashlib.sha256(peer if isinstance(peer, bytes) else peer.to_bytes()).digest()


def xor_distance(a, b):
    """xor_distance(a: bytes, b: bytes) -> int: ``int(a) ^ int(b)``, big-endian, as py-libp2p's kad_dht.utils."""
    cdef uint8_t buf[64]
    cdef const uint8_t *pa
    cdef const uint8_t *pb
    cdef Py_ssize_t n, i
    if not PyBytes_Check(a) or not PyBytes_Check(b):
        raise TypeError("Both key1 and key2 must be bytes objects")
    n = PyBytes_GET_SIZE(a)
    if n != PyBytes_GET_SIZE(b) or n > 64:
        return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    pa = <const uint8_t *>PyBytes_AS_STRING(a)
    pb = <const uint8_t *>PyBytes_AS_STRING(b)
    for i in range(n):
        buf[i] = pa[i] ^ pb[i]
    return _PyLong_FromByteArray(buf, n, 0, 0)


@cython.final
cdef class KClosestIndex:
    """Peers with their precomputed 256-bit keys; ``closest(target, k)`` returns the k nearest by XOR distance."""

    cdef uint64_t *_keys
    cdef Py_ssize_t _cap
    cdef list _peers
    cdef dict _slot

    def __cinit__(self):
        self._peers = []
        self._slot = {}
        self._cap = 0
        self._keys = NULL

    def __dealloc__(self):
        PyMem_Free(self._keys)

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self._cap * 2 if self._cap else 64
        cdef uint64_t *keys = <uint64_t *>PyMem_Realloc(self._keys, cap * 4 * sizeof(uint64_t))
        if keys == NULL:
            raise MemoryError()
        self._keys = keys
        self._cap = cap
        return 0

    def add(self, peer, key=None):
        """add(peer, key: bytes | None = None) -> bool: index ``peer``; True if new, else its key is replaced."""
        cdef uint64_t words[4]
        cdef Py_ssize_t slot
        _load_key(peer_key(peer) if key is None else key, words, "key")
        found = self._slot.get(peer)
        if found is not None:
            slot = found
        else:
            slot = len(self._peers)
            if slot == self._cap:
                self._grow()
            self._slot[peer] = slot
            self._peers.append(peer)
        memcpy(self._keys + 4 * slot, words, sizeof(words))
        return found is None

    def remove(self, peer):
        """remove(peer) -> bool: forget ``peer``; True if it was indexed. The last slot moves into the freed one."""
        found = self._slot.pop(peer, None)
        if found is None:
            return False
        cdef Py_ssize_t slot = found
        cdef Py_ssize_t last = len(self._peers) - 1
        last_peer = self._peers.pop()
        if slot != last:
            self._peers[slot] = last_peer
            memcpy(self._keys + 4 * slot, self._keys + 4 * last, 4 * sizeof(uint64_t))
            self._slot[last_peer] = slot
        return True

    def sync(self, peers):
        """sync(peers: Iterable) -> None: make the index hold exactly ``peers``: drop others, add new ones."""
        peers = list(peers)
        wanted = set(peers)
        for peer in [p for p in self._peers if p not in wanted]:
            self.remove(peer)
        for peer in peers:
            if peer not in self._slot:
                self.add(peer)

    def closest(self, target, Py_ssize_t k=20):
        """closest(target: bytes, k: int = 20) -> list: the ``k`` peers nearest to the 32-byte key, nearest first."""
        cdef uint64_t t[4]
        cdef Py_ssize_t n = len(self._peers)
        cdef Py_ssize_t i
        cdef Cand *heap
        cdef list out
        _load_key(target, t, "target")
        if k <= 0 or n == 0:
            return []
        if k > n:
            k = n
        heap = <Cand *>PyMem_Malloc(k * sizeof(Cand))
        if heap == NULL:
            raise MemoryError()
        try:
            with nogil:
                _select(self._keys, n, t, heap, k)
            out = [None] * k
            for i in range(k):
                out[i] = self._peers[heap[i].idx]
        finally:
            PyMem_Free(heap)
        return out

    def closest_to_key(self, key, Py_ssize_t k=20):
        """closest_to_key(key: bytes, k: int = 20) -> list: ``RoutingTable.find_local_closest_peers`` semantics."""
        return self.closest(hashlib.sha256(key).digest(), k)

    def key_of(self, peer):
        """key_of(peer) -> bytes | None: the key ``peer`` is indexed under."""
        found = self._slot.get(peer)
        if found is None:
            return None
        cdef Py_ssize_t slot = found
        cdef uint8_t buf[32]
        cdef int i, j
        for i in range(4):
            for j in range(8):
                buf[8 * i + j] = <uint8_t>(self._keys[4 * slot + i] >> (56 - 8 * j))
        return PyBytes_FromStringAndSize(<char *>buf, 32)

    def peers(self):
        """peers() -> list: the indexed peers, in slot order."""
        return list(self._peers)

    def __len__(self):
        return len(self._peers)

    def __contains__(self, peer):
        return peer in self._slot
