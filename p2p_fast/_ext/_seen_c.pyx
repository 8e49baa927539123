# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of ``_seen_py``: same slot-ring ``SeenCache`` and linked-list LRU ``ValidationCache``.

See ``_seen_py`` for the semantics, which this module reproduces exactly. The C side keeps the generation as a
``long long`` and reads the coarse ``CLOCK_MONOTONIC`` / ``CLOCK_REALTIME`` directly when no clock was injected
(the clocks of ``time.monotonic`` / ``time.time``, at 1-4 ms resolution, nothing against a TTL of minutes).
Validation entries are linked through borrowed C pointers of a small ``cdef`` class owned by the index dict; an
evicted entry is reused for the key that evicted it.
"""

cimport cython
from cpython.dict cimport PyDict_DelItem, PyDict_GetItemWithError, PyDict_SetItem
from cpython.ref cimport PyObject
from cpython.list cimport PyList_Append
from libc.math cimport floor, isinf
from posix.time cimport clock_gettime, timespec

cdef extern from *:
    """
    #include <time.h>
    /* Coarse clocks cost ~5 ns instead of ~25 ns; their 1-4 ms resolution is nothing against a TTL of minutes. */
    #ifdef CLOCK_MONOTONIC_COARSE
    #define P2PF_MONOTONIC CLOCK_MONOTONIC_COARSE
    #else
    #define P2PF_MONOTONIC CLOCK_MONOTONIC
    #endif
    #ifdef CLOCK_REALTIME_COARSE
    #define P2PF_REALTIME CLOCK_REALTIME_COARSE
    #else
    #define P2PF_REALTIME CLOCK_REALTIME
    #endif
    """
    const int MONOTONIC "P2PF_MONOTONIC"
    const int REALTIME "P2PF_REALTIME"

DEFAULT_BUCKETS = 16


cdef inline double _clock_now(int clock_id) noexcept nogil:
    cdef timespec ts
    clock_gettime(clock_id, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline Py_ssize_t _slot(long long gen, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t s = <Py_ssize_t>(gen % n)
    return s + n if s < 0 else s


@cython.final
cdef class SeenCache:
    """Remember keys for ``ttl_seconds`` after they were last added or checked (``LastSeenCache`` semantics)."""

    cdef readonly double ttl
    cdef readonly Py_ssize_t buckets
    cdef double _width
    cdef long long _gen
    cdef list _ring  # buckets + 1 lists of keys, one per time slot
    cdef dict _where  # key -> the list it is filed in
    cdef list _cur
    cdef object _clock

    def __init__(self, double ttl_seconds, Py_ssize_t buckets=DEFAULT_BUCKETS, clock=None):
        if not ttl_seconds > 0.0 or isinf(ttl_seconds):
            raise ValueError(f"ttl_seconds must be positive and finite, got {ttl_seconds!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets!r}")
        self.ttl = ttl_seconds
        self.buckets = buckets
        self._width = ttl_seconds / buckets
        self._clock = clock
        self._ring = [[] for _ in range(buckets + 1)]
        self._where = {}
        self._gen = <long long>floor(self._now() / self._width)
        self._cur = self._ring[_slot(self._gen, buckets + 1)]

    cdef inline double _now(self) except? -1.0:
        if self._clock is None:
            return _clock_now(MONOTONIC)
        return self._clock()

    cdef inline int _advance(self) except -1:
        cdef double slots = self._now() / self._width
        cdef long long gen = <long long>slots  # floor(slots), without a libm call
        if gen > slots:
            gen -= 1
        if gen > self._gen:
            self._rotate(gen)
        return 0

    cdef int _rotate(self, long long gen) except -1:
        """Expire the slots between the current one and ``gen``, then make ``gen`` current."""
        cdef long long step
        cdef Py_ssize_t nslots = self.buckets + 1
        cdef list bucket
        if gen - self._gen >= nslots:
            for bucket in self._ring:
                del bucket[:]
            self._where.clear()
        else:
            for step in range(self._gen + 1, gen + 1):
                bucket = <list>self._ring[_slot(step, nslots)]
                for key in bucket:
                    if PyDict_GetItemWithError(self._where, key) == <PyObject *>bucket:
                        PyDict_DelItem(self._where, key)
                del bucket[:]
        self._gen = gen
        self._cur = <list>self._ring[_slot(gen, nslots)]
        return 0

    def add(self, key):
        """add(key) -> bool: remember ``key`` (again); True if it was not remembered before."""
        self._advance()
        cdef PyObject *held = PyDict_GetItemWithError(self._where, key)
        if held != <PyObject *>self._cur:
            PyDict_SetItem(self._where, key, self._cur)
            PyList_Append(self._cur, key)
        return held == NULL

    def has(self, key):
        """has(key) -> bool: whether ``key`` is remembered; a hit refreshes it, as ``LastSeenCache.has`` does."""
        self._advance()
        cdef PyObject *held = PyDict_GetItemWithError(self._where, key)
        if held == NULL:
            return False
        if held != <PyObject *>self._cur:
            PyDict_SetItem(self._where, key, self._cur)
            PyList_Append(self._cur, key)
        return True

    def __contains__(self, key):
        self._advance()
        return key in self._where

    def length(self):
        """length() -> int: number of keys remembered (``BaseTimedCache.length``)."""
        self._advance()
        return len(self._where)

    def __len__(self):
        self._advance()
        return len(self._where)

    def clear(self):
        """clear() -> None: forget every key."""
        cdef list bucket
        for bucket in self._ring:
            del bucket[:]
        self._where.clear()

    def stop(self):
        """stop() -> None: no-op, there is no background thread."""


@cython.final
@cython.freelist(64)
cdef class _Entry:
    # The index dict owns the entries; the list links are borrowed pointers (no refcounting, no cycles).
    cdef object key
    cdef object result
    cdef double stamp
    cdef PyObject *prev
    cdef PyObject *next


@cython.final
cdef class ValidationCache:
    """Validation results by message id: expire ``ttl`` seconds after ``result.timestamp``, LRU past ``max_size``."""

    cdef readonly double ttl
    cdef readonly Py_ssize_t max_size
    cdef dict _index
    cdef _Entry _root  # sentinel of a circular list: _root.next is least, _root.prev most recently used
    cdef object _clock

    def __init__(self, double ttl=300, Py_ssize_t max_size=1000, clock=None):
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._index = {}
        self._root = _Entry()
        self._root.prev = self._root.next = <PyObject *>self._root

    cdef inline double _now(self) except? -1.0:
        if self._clock is None:
            return _clock_now(REALTIME)
        return self._clock()

    cdef inline void _unlink(self, _Entry e) noexcept:
        (<_Entry>e.prev).next = e.next
        (<_Entry>e.next).prev = e.prev

    cdef inline void _link_last(self, _Entry e) noexcept:
        cdef PyObject *last = self._root.prev
        e.prev = last
        e.next = <PyObject *>self._root
        (<_Entry>last).next = <PyObject *>e
        self._root.prev = <PyObject *>e

    cdef int _drop(self, _Entry e) except -1:
        self._unlink(e)
        PyDict_DelItem(self._index, e.key)  # may free e
        return 0

    def get(self, msg_id):
        """get(msg_id) -> result | None: the cached result, or None if absent or expired (then it is dropped)."""
        cdef PyObject *found = PyDict_GetItemWithError(self._index, msg_id)
        cdef _Entry e
        if found == NULL:
            return None
        e = <_Entry>found
        if self._now() - e.stamp > self.ttl:
            self._drop(e)
            return None
        self._unlink(e)
        self._link_last(e)
        return e.result

    def put(self, msg_id, result):
        """put(msg_id, result) -> None: cache ``result`` (with a float ``timestamp``), evicting the LRU if full."""
        cdef double stamp = result.timestamp
        cdef PyObject *found = PyDict_GetItemWithError(self._index, msg_id)
        cdef _Entry e
        if found != NULL:
            e = <_Entry>found
            e.result = result
            e.stamp = stamp
            self._unlink(e)
            self._link_last(e)
            return
        e = None
        while self._root.next != <PyObject *>self._root and len(self._index) >= self.max_size:
            e = <_Entry>self._root.next
            self._drop(e)
        if e is None:
            e = _Entry.__new__(_Entry)
        # else: the evicted entry is reused for the new key (no allocation on the steady-state path)
        e.key = msg_id
        e.result = result
        e.stamp = stamp
        self._link_last(e)
        PyDict_SetItem(self._index, msg_id, e)

    def clear_expired(self):
        """clear_expired() -> None: drop every expired entry."""
        cdef double now = self._now()
        cdef PyObject *e = self._root.next
        cdef PyObject *nxt
        while e != <PyObject *>self._root:
            nxt = (<_Entry>e).next
            if now - (<_Entry>e).stamp > self.ttl:
                self._drop(<_Entry>e)
            e = nxt

    def __len__(self):
        return len(self._index)

    def __contains__(self, msg_id):
        return msg_id in self._index

    def clear(self):
        """clear() -> None: drop every entry."""
        self._index.clear()
        self._root.prev = self._root.next = <PyObject *>self._root
