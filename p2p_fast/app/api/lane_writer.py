"""Everything the node writes on one task lane, in order, most of it without a scheduler round.

Why not a writer task fed by a channel: a completion's event is emitted inside the dispatcher's handling of the
worker's response, which then commits the journal (and signs the worker's receipt) before it yields; a writer task
would run only after that, ~0.1-0.3 ms later on the 2-core bench machine (bench/RESULTS.md "Client round trip
over the task lane"). :meth:`LaneWriter.send` is synchronous: when nothing is queued and no write is in progress it
writes to the socket at once (it is non-blocking: trio made it so), so the client's result leaves before the
node's bookkeeping; what the socket does not take is queued for :meth:`LaneWriter.run`, which also holds the
order. A client that stops reading lets the queue grow to ``limit`` bytes; then the lane ends (``LaneOverflow``)
and the client, reconnecting with the last event it saw, gets the rest from the bus's history or resyncs by
lookup, as after an event stream's overflow.

:meth:`LaneWriter.hold` keeps an answer for the next write, ``delay`` seconds at most (see ``lane.TaskLane``).
"""

from __future__ import annotations

import math
import os

import trio


class LaneOverflow(Exception):
    """The client let more than the writer's limit pile up unread."""


class LaneWriter:
    def __init__(self, stream: trio.SocketStream, limit: int, delay: float, keepalive: float, ping: bytes) -> None:
        self.stream = stream
        self.fd = stream.socket.fileno()
        self.limit = limit
        self.delay = delay
        self.keepalive = keepalive
        self.ping = ping
        self.queue: list[bytes] = []
        self.queued = 0  # bytes in ``queue``
        self.busy = False  # ``run`` is in a write: anything sent now queues behind it
        self.held: list[bytes] = []
        self.held_until = math.inf
        self.failed: BaseException | None = None
        self.last_write = trio.current_time()
        self.direct = 0  # writes done by ``send`` itself (for tests and diagnostics)
        self._wake = trio.Event()
        self._writing = trio.CancelScope()  # run's write in progress: a failure cancels it (it may wait for ever)
        self._progress = trio.Event()  # set (and replaced) each time run has written

    def send(self, data: bytes) -> None:
        """Write ``data`` after everything before it (held answers first); never blocks, never raises (a failure
        ends :meth:`run`)."""
        if self.held:
            data = b"".join(self.held) + data
            self.held, self.held_until = [], math.inf
        if self.failed is not None:
            return
        if not self.busy and not self.queue:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                n = 0
            except OSError as exc:  # the client went away
                self._fail(exc)
                return
            self.last_write = trio.current_time()
            if n == len(data):
                self.direct += 1
                return
            data = data[n:]
        self.queue.append(data)
        self.queued += len(data)
        if self.queued > self.limit:
            self._fail(LaneOverflow(f"the client left {self.queued} bytes unread"))
        self._wake.set()

    def hold(self, data: bytes) -> None:
        """Write ``data`` with the next :meth:`send`, or after ``delay`` seconds if none comes first."""
        self.held.append(data)
        if self.held_until == math.inf:
            self.held_until = trio.current_time() + self.delay
            self._wake.set()

    def abort(self, exc: BaseException) -> None:
        """End the lane with ``exc`` (what :meth:`run` raises); nothing more is written."""
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = exc
        self.queue, self.queued = [], 0
        self._writing.cancel()  # a client that stopped reading holds that write for ever
        self._wake.set()

    async def run(self) -> None:
        """Write what ``send`` queued, held answers when they are due, a ping after ``keepalive`` seconds of
        silence; raise what broke the lane (the client's socket, or :class:`LaneOverflow`)."""
        while True:
            self._wake = trio.Event()
            if self.failed is not None:
                raise self.failed
            if self.queue:
                data = b"".join(self.queue)
                self.queue, self.queued = [], 0
                self.busy = True
                try:
                    with trio.CancelScope() as self._writing:
                        await self.stream.send_all(data)
                finally:
                    self.busy = False
                done, self._progress = self._progress, trio.Event()
                done.set()
                self.last_write = trio.current_time()
                continue
            now = trio.current_time()
            if self.held and now >= self.held_until:
                self.send(b"")
                continue
            if now >= self.last_write + self.keepalive:
                self.send(self.ping)
                continue
            with trio.move_on_at(min(self.held_until, self.last_write + self.keepalive)):
                await self._wake.wait()

    async def wait_below(self, level: int) -> None:
        """Wait until at most ``level`` bytes are queued (``run`` must be running): for writing much (a replay)
        at the pace the client reads it."""
        while self.queued > level and self.failed is None:
            await self._progress.wait()

    async def flush(self, timeout: float) -> None:
        """Wait until everything sent so far is written (``timeout`` at most): for the last words of a lane."""
        with trio.move_on_after(timeout):
            if self.held:
                self.send(b"")
            while (self.queue or self.busy) and self.failed is None:
                if not self.busy:
                    data = b"".join(self.queue)
                    self.queue, self.queued = [], 0
                    await self.stream.send_all(data)
                else:
                    await trio.sleep(0.01)
