"""TCP connections that read from the socket in large chunks and serve small reads from what they hold.

py-libp2p's ``TrioTCPStream.read(n)`` is one ``receive_some(n)`` (a syscall and a trip through trio's socket
wrapper) under a lock, for every read. Noise reads each message as ``read(2)`` for its length, then ``read(len)``
for its body, so every message costs two of them even when both parts arrived in the same TCP segment, and a burst
of messages already in the kernel buffer is fetched a few bytes at a time. :class:`BufferedTCPStream` receives up
to ``RECV_SIZE`` bytes at once and answers the following reads from that buffer without the lock or a syscall.

Its locks are :class:`~p2p_fast.stack.eager_lock.EagerLock`: stock's ``async with self.write_lock`` cost every frame
written a scheduler round before it reached the socket (and every read that finds the buffer empty one before its
``receive_some``); ``send_all`` and ``receive_some`` still end with their own schedule point.

Bytes come out exactly as stock's would (in order, never more than ``n`` per read, ``b""`` at EOF after the
buffer is drained, the same errors). :func:`apply` points py-libp2p's TCP transport (and the shared-port listener) at the
class, so every TCP connection of the process uses it.

Upstream: ``libp2p/io/trio.py``, ``TrioTCPStream.read`` (py-libp2p 0.8.1) -- a limit, not a bug: one
``receive_some(n)`` per read. The class has no constructor hook (``libp2p/transport/tcp/tcp.py`` names it
directly), hence the module attributes. No upstream issue was found. Shown by
``tests/stack/patches/test_tcp_buffering.py``.
"""

from __future__ import annotations

import libp2p.io.trio as _io_trio_mod
import libp2p.transport.tcp.tcp as _tcp_mod
import trio
from libp2p.io.exceptions import ConnectionClosedError

from p2p_fast.stack.eager_lock import EagerLock
from p2p_fast.stack.patches._attrs import AttributePatch, Replacement

RECV_SIZE = 65536
STOCK_TCP_STREAM = _io_trio_mod.TrioTCPStream


class BufferedTCPStream(STOCK_TCP_STREAM):  # type: ignore[valid-type,misc]
    """``TrioTCPStream`` with a receive buffer (see the module doc)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        self.read_lock = EagerLock()  # stock's trio.Lock()s, without a scheduler round when free (see module doc)
        self.write_lock = EagerLock()
        self._buf = b""
        self._pos = 0

    def _take(self, n: int | None) -> bytes:
        buf, pos = self._buf, self._pos
        end = len(buf) if n is None or n < 0 else min(len(buf), pos + n)
        if pos == 0 and end == len(buf):
            out = buf
        else:
            out = buf[pos:end]
        if end == len(buf):
            self._buf, self._pos = b"", 0
        else:
            self._pos = end
        return out

    async def read(self, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        if self._pos < len(self._buf):
            return self._take(n)
        async with self.read_lock:
            if self._pos < len(self._buf):  # another reader filled it while we waited for the lock
                return self._take(n)
            want = RECV_SIZE if n is None or n < 0 or n < RECV_SIZE else n
            try:
                data = await self.stream.receive_some(want)
            except trio.BrokenResourceError as error:
                raise ConnectionClosedError(f"TCP connection reset by remote peer: {error}",
                                            transport="tcp") from error
            except trio.ClosedResourceError:
                return b""  # closed locally: EOF, as stock
            if n is None or n < 0 or len(data) <= n:
                return data
            self._buf, self._pos = data, 0
            return self._take(n)


PATCH = AttributePatch(
    Replacement(_tcp_mod, "TrioTCPStream", BufferedTCPStream),
    Replacement(_io_trio_mod, "TrioTCPStream", BufferedTCPStream),  # the shared-port listener imports it late
)

apply = PATCH.apply
revert = PATCH.revert
