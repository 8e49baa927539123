"""EagerLock (p2p_fast.stack.eager_lock) behaves as trio.Lock except that a free lock is taken without a schedule
point; and the write path of a frame (TCP stream, FastYamux, the task protocol's FrameWriter) yields once, in
``send_all``, where stock py-libp2p yields at every layer's lock.

Schedule points are counted exactly: a trio instrument counts the steps of the task under test, and every step
after its first is a resumption after a yield."""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterator

import pytest
import trio
import trio.testing
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2p_fast.protocols.tasks.wire import FrameWriter, StreamClosed
from p2p_fast.stack.eager_lock import EagerLock
from p2p_fast.stack.muxer import FastYamux
from p2p_fast.stack.patches.tcp_buffering import STOCK_TCP_STREAM, BufferedTCPStream
from host_pair import two_hosts

SINK = "/p2p-fast/test/eager-sink/1.0.0"


def in_trio(fn):
    """Run the async test ``fn`` in a fresh trio loop (the suite has no async test plugin)."""
    def test() -> None:
        trio.run(fn)
    test.__name__, test.__doc__ = fn.__name__, fn.__doc__
    return test


class _Steps(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


@contextmanager
def yields_of_this_task() -> Iterator[_Steps]:
    """How many times the current task yields to the scheduler inside the block (``.steps`` after it)."""
    counter = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)


@in_trio
async def test_free_lock_taken_without_a_schedule_point():
    lock = EagerLock()
    with yields_of_this_task() as c:
        async with lock:
            assert lock.locked()
    assert c.steps == 0
    assert not lock.locked()
    stock = trio.Lock()
    with yields_of_this_task() as c:
        async with stock:
            pass
    assert c.steps == 1  # what trio.Lock costs a free lock


@in_trio
async def test_held_lock_waits_in_fifo_order_and_excludes():
    lock = EagerLock()
    order: list[int] = []
    inside = [0]

    async def user(i: int) -> None:
        async with lock:
            inside[0] += 1
            assert inside[0] == 1
            order.append(i)
            await trio.sleep(0.001)
            inside[0] -= 1

    async with trio.open_nursery() as nursery:
        await lock.acquire()
        for i in range(5):
            nursery.start_soon(user, i)
            await trio.testing.wait_all_tasks_blocked()
        assert lock.statistics().tasks_waiting == 5
        lock.release()
    assert order == [0, 1, 2, 3, 4]
    assert not lock.locked()


@in_trio
async def test_cancelled_caller_does_not_take_the_lock():
    lock = EagerLock()
    with trio.CancelScope() as scope:
        scope.cancel()
        await lock.acquire()
        pytest.fail("acquire in a cancelled scope must raise Cancelled")
    assert scope.cancelled_caught
    assert not lock.locked()


@in_trio
async def test_only_the_owner_releases():
    lock = EagerLock()
    lock.acquire_nowait()
    with pytest.raises(RuntimeError, match="re-acquire"):  # as trio.Lock: no re-entry
        await lock.acquire()
    errors: list[BaseException] = []

    async def other() -> None:
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
    assert len(errors) == 1 and lock.locked()
    lock.release()
    assert lock.statistics().owner is None


async def _tcp_write_yields(cls: type) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        server = await listeners[0].accept()
        async with server:
            with yields_of_this_task() as c:
                await client.write(b"frame")
            assert await server.receive_some(16) == b"frame"
            await client.close()
    finally:
        for lst in listeners:
            await lst.aclose()
    return c.steps


@in_trio
async def test_tcp_write_yields_once_where_stock_yields_twice():
    """Stock TrioTCPStream.write: its lock's schedule point, then send_all's. Ours: send_all's only."""
    assert await _tcp_write_yields(STOCK_TCP_STREAM) == 2
    assert await _tcp_write_yields(BufferedTCPStream) == 1


async def _frame_write_yields(muxer: type) -> tuple[int, int]:
    """Yields of one ``NetStream.write`` and of one write through ``FrameWriter``'s path, on one real connection."""
    async with two_hosts(muxer, muxer) as (a, b):
        got = bytearray()
        done = trio.Event()

        async def sink(stream) -> None:
            while len(got) < 10:
                got.extend(await stream.read(64))
            done.set()

        b.set_stream_handler(SINK, sink)
        stream = await a.new_stream(b.get_id(), [SINK])
        await stream.write(b"warm")  # the stream's SYN went out: later writes are plain DATA frames
        with yields_of_this_task() as net:
            await stream.write(b"ab")
        with yields_of_this_task() as direct:
            await FrameWriter(stream, 1024).out.write(b"cdef")
        with trio.fail_after(10):
            await done.wait()
        assert bytes(got) == b"warmabcdef"
        await stream.close()
    return net.steps, direct.steps


@in_trio
async def test_frame_write_yields_once_on_our_muxer():
    """FastYamux + our TCP stream: a FrameWriter's write reaches the socket with send_all's one schedule point;
    NetStream.write adds its state lock's. Stock Yamux yields more still (its frame lock, its window checks)."""
    assert await _frame_write_yields(FastYamux) == (2, 1)
    stock_net, stock_direct = await _frame_write_yields(Yamux)
    assert stock_direct > 1 and stock_net > stock_direct


def serve_a_resetting_sink(host) -> trio.Event:
    """SINK on ``host``: reads once, then resets the stream; the event is set once it has."""
    reset = trio.Event()

    async def resetting_sink(stream) -> None:
        await stream.read(64)
        await stream.reset()
        reset.set()

    host.set_stream_handler(SINK, resetting_sink)
    return reset


@in_trio
async def test_frame_writer_on_the_muxed_stream_still_reports_a_dead_stream():
    """Writing below NetStream skips its state check: the muxer's own refusal must still end the writer."""
    async with two_hosts() as (a, b):
        reset = serve_a_resetting_sink(b)
        for how in ("reset by the peer", "closed here"):
            stream = await a.new_stream(b.get_id(), [SINK])
            writer = FrameWriter(stream, 1024)
            await writer.out.write(b"hello")
            if how == "reset by the peer":
                with trio.fail_after(10):
                    await reset.wait()
                    while not writer.out.closed:  # the peer's RST is on its way to our muxer
                        await trio.sleep(0.01)
            else:
                await stream.close()
            writer.send_raw(b"more")
            with trio.fail_after(10), pytest.raises(StreamClosed):
                await writer.run()
            assert writer.closed


async def _sink_pair(a, b, into: bytearray):
    """A stream from ``a`` to a SINK on ``b`` that appends what it reads to ``into``."""
    async def sink(stream) -> None:
        while True:
            try:
                data = await stream.read(65536)
            except Exception:
                return
            if not data:
                return
            into.extend(data)

    b.set_stream_handler(SINK, sink)
    return await a.new_stream(b.get_id(), [SINK])


@asynccontextmanager
async def writer_to_a_sink(max_frame: int) -> AsyncIterator[tuple[FrameWriter, bytearray]]:
    """A FrameWriter on a real stream to a sink, and the bytes the sink has read so far."""
    async with two_hosts() as (a, b):
        got = bytearray()
        stream = await _sink_pair(a, b, got)
        writer = FrameWriter(stream, max_frame)
        await writer.out.write(b"warm")  # the stream's opening frames are out and acknowledged
        await _until(lambda: len(got) == 4, "the warm-up bytes")
        got.clear()
        yield writer, got
        await stream.close()


async def _until(cond, what: str) -> None:
    with trio.fail_after(10):
        while not cond():
            await trio.sleep(0.005)


@in_trio
async def test_flush_writes_from_the_caller_in_order_with_the_writer_task():
    """Frames queued, flushed by the caller (one schedule point: send_all's), then more through the writer task:
    the peer reads them all, in order."""
    async with writer_to_a_sink(1024) as (writer, got), trio.open_nursery() as nursery:
        writer.send_raw(b"one,")
        writer.send_raw(b"two,")
        with yields_of_this_task() as c:
            await writer.flush()
        assert c.steps == 1 and not writer.pending
        await _until(lambda: bytes(got) == b"one,two,", "the flushed frames")
        nursery.start_soon(writer.run)
        writer.send_raw(b"three")
        await _until(lambda: bytes(got) == b"one,two,three", "the writer task's frame")
        nursery.cancel_scope.cancel()


@in_trio
async def test_flush_leaves_to_the_writer_task_what_does_not_fit_one_frame():
    async with writer_to_a_sink(1 << 20) as (writer, got), trio.open_nursery() as nursery:
        big = b"x" * 70000  # over one yamux frame: may need to wait for window, so not the caller's to write
        writer.send_raw(big)
        await writer.flush()
        assert writer.pending == [big]
        nursery.start_soon(writer.run)
        await _until(lambda: len(got) == len(big), "the writer task to send it")
        nursery.cancel_scope.cancel()


@in_trio
async def test_flush_by_a_cancelled_caller_still_sends_what_it_took():
    """The frames leave the queue when a flush starts: a caller cancelled meanwhile must not lose them."""
    async with writer_to_a_sink(1024) as (writer, got):
        writer.send_raw(b"kept")
        with trio.CancelScope() as scope:
            scope.cancel()
            await writer.flush()
        await _until(lambda: bytes(got) == b"kept", "the frame of the cancelled flush")


@in_trio
async def test_a_failed_flush_ends_the_writer_task_not_the_caller():
    async with two_hosts() as (a, b):
        reset = serve_a_resetting_sink(b)
        stream = await a.new_stream(b.get_id(), [SINK])
        writer = FrameWriter(stream, 1024)
        writer.send_raw(b"hello")
        await writer.flush()
        with trio.fail_after(10):
            await reset.wait()
        await _until(lambda: writer.out.closed, "the peer's reset to arrive")
        writer.send_raw(b"lost")
        await writer.flush()  # fails inside: no exception here
        assert writer.failed is not None
        with trio.fail_after(10), pytest.raises(StreamClosed):
            await writer.run()
        assert writer.closed
