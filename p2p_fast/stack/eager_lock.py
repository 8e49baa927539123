"""A trio lock whose uncontended ``acquire`` does not yield to the scheduler.

``trio.Lock.acquire`` is a full checkpoint: even when the lock is free it ends with a schedule point, so every
``async with lock`` lets every other runnable task of the process run first. py-libp2p takes a lock at each layer
of a write (the secure session's TCP stream, the muxer's connection), so a frame of a lone request waited one
scheduler round per layer before it reached the socket: on a busy node each round runs the other tasks' steps,
tens of microseconds each (bench/RESULTS.md, "Round trip: schedule points on the write path").

:class:`EagerLock` keeps the cancellation half of the checkpoint (a cancelled caller still gets ``Cancelled``
before it takes the lock) and waits in FIFO order like ``trio.Lock`` when the lock is held; only the schedule point
of a free lock is gone. Where it is used the operation under the lock yields anyway when it does I/O
(``SocketStream.send_all`` and ``receive_some`` end with a schedule point), so no task can run forever without one.
"""

from __future__ import annotations

from types import TracebackType

import trio


class EagerLock:
    """``trio.Lock``'s interface (``async with``, ``acquire``, ``acquire_nowait``, ``release``, ``locked``,
    ``statistics``), owner checks included; see the module doc for the one difference."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()  # parks in FIFO order, as trio.Lock does

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def statistics(self) -> trio.LockStatistics:
        return self._lock.statistics()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()
