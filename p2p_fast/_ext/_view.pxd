# cython: language_level=3
"""Borrow the bytes of a bytes-like object: ``bytes`` directly, anything else through the buffer protocol.

Shared by the compiled modules. Every ``view_acquire`` that succeeded must be paired with ``view_release``
(a ``finally`` block), which is a no-op for ``bytes``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t


cdef struct View:
    const uint8_t *ptr
    Py_ssize_t len
    bint held
    Py_buffer buf


cdef inline int view_acquire(object obj, View *v) except -1:
    if PyBytes_CheckExact(obj):
        v.ptr = <const uint8_t *>PyBytes_AS_STRING(obj)
        v.len = PyBytes_GET_SIZE(obj)
        v.held = False
        return 0
    PyObject_GetBuffer(obj, &v.buf, PyBUF_SIMPLE)
    v.held = True
    v.ptr = <const uint8_t *>v.buf.buf
    v.len = v.buf.len
    return 0


cdef inline void view_release(View *v) noexcept:
    if v.held:
        v.held = False
        PyBuffer_Release(&v.buf)
