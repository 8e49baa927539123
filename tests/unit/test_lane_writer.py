"""``p2p_fast.app.api.lane_writer.LaneWriter`` over a real socket pair: writes in order whether they go straight
to the socket or through the queue, held answers go out with the next write or when due, pings in silence, and a
peer that stops reading ends the lane at the limit instead of growing the node's memory."""

from __future__ import annotations

import socket

import pytest
import trio

from p2p_fast.app.api.lane_writer import LaneOverflow, LaneWriter

PING = b"<ping>"


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return (trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b)))


async def _read_until(stream: trio.SocketStream, n: int, timeout: float = 10) -> bytes:
    got = bytearray()
    with trio.fail_after(timeout):
        while len(got) < n:
            chunk = await stream.receive_some(1 << 20)
            assert chunk, "the writer's side closed"
            got += chunk
    return bytes(got)


def test_idle_writes_go_straight_out_and_held_answers_ride_with_the_next() -> None:
    async def main() -> None:
        node, client = _pair()
        w = LaneWriter(node, limit=1 << 20, delay=5.0, keepalive=60.0, ping=PING)
        w.send(b"hello;")
        assert w.direct == 1 and not w.queue
        w.hold(b"answer;")
        assert await _read_until(client, 6) == b"hello;"  # the answer waits (delay 5 s) ...
        w.send(b"event;")  # ... for the next write, and goes first
        assert await _read_until(client, 13) == b"answer;event;"

        await node.aclose()
        await client.aclose()

    trio.run(main)


def test_a_held_answer_goes_out_when_due_and_pings_fill_silence() -> None:
    async def main() -> None:
        node, client = _pair()
        w = LaneWriter(node, limit=1 << 20, delay=0.05, keepalive=0.3, ping=PING)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            w.hold(b"answer;")
            t = trio.current_time()
            assert await _read_until(client, 7) == b"answer;"
            assert trio.current_time() - t >= 0.04
            assert await _read_until(client, len(PING), timeout=5) == PING
            nursery.cancel_scope.cancel()

        await node.aclose()
        await client.aclose()

    trio.run(main)


def test_order_holds_when_the_socket_is_full_and_drains() -> None:
    async def main() -> None:
        node, client = _pair()
        w = LaneWriter(node, limit=64 << 20, delay=1.0, keepalive=60.0, ping=PING)
        chunks = [bytes([i % 251]) * 50_000 for i in range(200)]  # 10 MB: more than the socket buffers hold
        for c in chunks:
            w.send(c)
        assert w.queue, "the socket took everything at once: the test did not fill it"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            got = await _read_until(client, sum(map(len, chunks)), timeout=30)
            w.send(b"last")
            assert await _read_until(client, 4) == b"last"
            nursery.cancel_scope.cancel()
        assert got == b"".join(chunks)

        await node.aclose()
        await client.aclose()

    trio.run(main)


def test_a_peer_that_stops_reading_ends_the_lane_at_the_limit() -> None:
    async def main() -> None:
        node, client = _pair()
        w = LaneWriter(node, limit=1 << 20, delay=1.0, keepalive=60.0, ping=PING)
        ended: list[BaseException] = []

        async def run() -> None:
            try:
                await w.run()
            except LaneOverflow as exc:
                ended.append(exc)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                for _ in range(400):  # 20 MB, never read: run's write blocks, the queue grows past the limit
                    w.send(b"x" * 50_000)
                    await trio.sleep(0)
                    if ended:
                        break
        assert ended and "unread" in str(ended[0])  # run ended although its write could never finish
        assert w.failed is not None and not w.queue  # nothing more kept for it
        w.send(b"after")  # ignored, no error into the caller (the event bus)

        await node.aclose()
        await client.aclose()

    trio.run(main)


def test_a_peer_that_went_away_fails_the_writer_not_the_caller() -> None:
    async def main() -> None:
        node, client = _pair()
        w = LaneWriter(node, limit=1 << 20, delay=1.0, keepalive=60.0, ping=PING)
        await client.aclose()
        for _ in range(3):
            w.send(b"event")  # the first may land in the buffer; then EPIPE: kept as the failure
        with pytest.raises(OSError):
            await w.run()

        await node.aclose()
        await client.aclose()

    trio.run(main)
