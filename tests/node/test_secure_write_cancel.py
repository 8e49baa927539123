"""A write cancelled halfway through a Noise frame must not desynchronise the secure session.

py-libp2p's Noise writer encrypts a message (taking the next nonce) and only then awaits the socket: the TCP
stream's lock and ``send_all``. A cancellation that lands in between (a ping's ``move_on_after``, a stream
negotiation's ``fail_after``, any caller's deadline under CPU overload) leaves that nonce used but its message never
sent (or sent in part), so every later message from this end fails authentication at the peer:
``NoiseInvalidMessage: Failed authentication of message`` (``cryptography.exceptions.InvalidTag``) under the peer's
``FastYamux.handle_incoming``, which then closes the connection. These tests cancel writers exactly there, over
real TCP + Noise connections, and require the connection to survive and every later message to arrive.
"""

from __future__ import annotations

import logging
import random

import trio
from libp2p.network.stream.exceptions import StreamEOF

from p2p_fast.stack.muxer import FastYamux
from host_pair import two_hosts

SINK = "/p2p-fast/test/sink/1.0.0"
ATTEMPTS = 40  # each attempt lands the cancellation after the encryption with probability about 1/2


def muxed_conn(host, peer_id) -> FastYamux:
    return host.get_network().get_connections(peer_id)[0].muxed_conn


async def collect(stream, into: bytearray) -> None:
    while True:
        try:
            data = await stream.read(65536)
        except StreamEOF:
            return
        if not data:
            return
        into += data


def collecting_sink(host, into: bytearray) -> trio.Event:
    """Serve SINK on ``host``: every stream's bytes are appended to ``into``; the event is set when a stream ends."""
    done = trio.Event()

    async def sink(stream) -> None:
        await collect(stream, into)
        done.set()

    host.set_stream_handler(SINK, sink)
    return done


def session_alive(host, peer_id) -> bool:
    """The muxed connection from ``host`` to ``peer_id`` is not shutting down (a failed authentication closes it)."""
    return not muxed_conn(host, peer_id).event_shutting_down.is_set()


def auth_failures(caplog) -> list[str]:
    return [r.getMessage() + repr(r.exc_info) for r in caplog.records
            if r.exc_info and ("InvalidTag" in repr(r.exc_info) or "NoiseInvalidMessage" in repr(r.exc_info))]


async def cancelled_at_the_next_yield(stream, payload: bytes) -> bool:
    """Write ``payload`` while another task cancels the write at its first yield (after the muxer's write lock,
    i.e. inside the secure write). True if the write was cancelled."""
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            async def cancel() -> None:
                scope.cancel()

            nursery.start_soon(cancel)
            await stream.write(payload)
            await trio.sleep(0)  # the cancellation, if the write did not see it
    return scope.cancelled_caught


def test_a_write_cancelled_inside_the_secure_write_does_not_break_the_session(caplog):
    caplog.set_level(logging.ERROR)
    received = bytearray()

    async def main() -> tuple[int, bool]:
        async with two_hosts() as (a, b):
            done = collecting_sink(b, received)
            stream = await a.new_stream(b.get_id(), [SINK])
            sent = bytearray()
            cancelled = 0
            for i in range(ATTEMPTS):
                payload = bytes([i % 251]) * 100
                if await cancelled_at_the_next_yield(stream, payload):
                    cancelled += 1
                else:
                    sent += payload
                if not session_alive(b, a.get_id()):
                    break
            # A cancelled write either went out whole or not at all; the writes after it must arrive.
            tail = b"after the cancellations" * 10
            alive = session_alive(b, a.get_id())
            if alive:
                await stream.write(tail)
                await stream.close()
                with trio.move_on_after(10):
                    await done.wait()
            return cancelled, alive

    cancelled, alive = trio.run(main)
    assert cancelled > 0  # the scenario happened
    assert auth_failures(caplog) == []
    assert alive
    assert received.endswith(b"after the cancellations" * 10)


def test_concurrent_writers_with_expiring_deadlines_keep_the_session(caplog):
    """The overload pattern: many writers on one connection, each under a deadline that expires while it waits."""
    caplog.set_level(logging.ERROR)
    received = bytearray()

    async def main() -> bool:
        async with two_hosts() as (a, b):
            collecting_sink(b, received)
            streams = [await a.new_stream(b.get_id(), [SINK]) for _ in range(4)]
            rng = random.Random(12)

            async def writer(stream) -> None:
                for _ in range(50):
                    with trio.move_on_after(rng.choice([0, 0.0001, 0.0005, 0.002])):
                        await stream.write(b"w" * rng.choice([10, 1000, 30000]))

            async with trio.open_nursery() as nursery:
                for s in streams:
                    for _ in range(3):
                        nursery.start_soon(writer, s)
            alive = session_alive(b, a.get_id())
            if alive:
                last = streams[0]
                await last.write(b"the end")
                await last.close()
                with trio.move_on_after(10):
                    while not received.endswith(b"the end"):
                        await trio.sleep(0.01)
            return alive

    alive = trio.run(main)
    assert auth_failures(caplog) == []
    assert alive
    assert received.endswith(b"the end")


def test_a_frame_write_that_cannot_finish_closes_the_connection(monkeypatch, caplog):
    """The shield is bounded: when the peer stops reading and the socket buffers fill, a frame write that waits
    past CONNECTION_WRITE_TIMEOUT closes the connection (its session state is unknown) and the writer gets an
    error, instead of blocking forever or going on with a half-written frame."""
    import p2p_fast.stack.muxer as muxer_mod

    monkeypatch.setattr(muxer_mod, "CONNECTION_WRITE_TIMEOUT", 1.0)
    caplog.set_level(logging.WARNING)

    async def main() -> tuple[int, bool]:
        async with two_hosts() as (a, b):
            b.set_stream_handler(SINK, lambda stream: trio.sleep_forever())
            streams = [await a.new_stream(b.get_id(), [SINK]) for _ in range(64)]
            conn_b = muxed_conn(b, a.get_id())
            tcp_b = conn_b.secured_conn.conn.read_writer.read_write_closer.stream
            failures = 0
            async with tcp_b.read_lock:  # b stops reading its socket: a's writes back up
                async def fill(stream) -> None:
                    nonlocal failures
                    try:
                        with trio.fail_after(30):
                            await stream.write(b"x" * (256 * 1024))
                    except trio.TooSlowError:
                        raise
                    except Exception:
                        failures += 1

                async with trio.open_nursery() as nursery:
                    for s in streams:
                        nursery.start_soon(fill, s)
                closed = muxed_conn_closed(a, b.get_id())
            return failures, closed

    failures, closed = trio.run(main)
    assert failures > 0
    assert closed
    assert any("took over" in r.getMessage() for r in caplog.records)


def muxed_conn_closed(host, peer_id) -> bool:
    conns = host.get_network().get_connections(peer_id)
    return not conns or all(c.muxed_conn.event_shutting_down.is_set() or c.muxed_conn._write_broken for c in conns)


def test_a_message_abandoned_part_way_resets_the_stream_instead_of_running_into_the_next():
    """A write larger than the send window goes out in frames; if it is abandoned after some of them (its caller's
    deadline, or the window wait timing out at a peer too loaded to read), the receiver holds the first part of a
    message whose rest never comes. A later write on the same stream would be read as that rest: a length-prefixed
    protocol (GossipSub RPCs) then parses garbage ("Error parsing message with type 'pubsub.pb.RPC'", a forged-looking
    "invalid-signed-record"). The stream must be reset instead, so the reader sees a reset and never the next
    message's bytes glued to half of the first."""

    first = bytes([1]) * (1024 * 1024)  # four times the initial window: the write waits for window updates
    second = bytes([2]) * 1000

    async def main() -> None:
        async with two_hosts() as (a, b):
            got = bytearray()
            reader_may_go = trio.Event()
            outcome: dict[str, object] = {}

            async def slow_reader(stream) -> None:
                await reader_may_go.wait()  # a peer too busy to read: the sender's window runs out
                try:
                    await collect(stream, got)
                except Exception as exc:  # a reset
                    outcome["reader"] = type(exc).__name__

            b.set_stream_handler(SINK, slow_reader)
            stream = await a.new_stream(b.get_id(), [SINK])
            with trio.move_on_after(1.0) as scope:
                await stream.write(first)
            assert scope.cancelled_caught  # abandoned part-way: the window is exhausted
            reader_may_go.set()  # the peer reads again: window updates come back
            try:
                with trio.fail_after(10):
                    await stream.write(second)
                outcome["second_write"] = "sent"
            except Exception as exc:
                outcome["second_write"] = type(exc).__name__
            with trio.fail_after(10):
                while "reader" not in outcome and bytes([2]) not in got:
                    await trio.sleep(0.02)
            assert bytes([2]) not in got, "the next message's bytes followed half of the abandoned one"
            assert 0 < len(got) < len(first) and outcome["reader"] == "StreamReset"
            assert outcome["second_write"] != "sent"

    trio.run(main)


def test_the_frame_reader_never_waits_for_the_writers_so_two_busy_ends_cannot_deadlock():
    """Both ends write more than the sockets hold while the other end is not reading, and each end has a PING in
    flight to the other. A reader that answers the PING (or acknowledges a new stream) by awaiting the connection's
    write lock waits behind its own writers, which wait for the peer to read, whose reader waits behind *its*
    writers: a deadlock that lasted until CONNECTION_WRITE_TIMEOUT closed the connection (20 closes at the
    bootstrap of a 100-node join storm). Control frames must be answered without the reader waiting for writers,
    as go-yamux does, so both ends drain and every byte arrives on a live connection."""
    import socket

    from libp2p.stream_muxer.yamux.yamux import FLAG_SYN, TYPE_PING

    from p2p_fast._ext import pack_yamux_header

    per_stream, streams_each_way = 192 * 1024, 8  # each stream's bytes fit its receive window

    async def main() -> None:
        async with two_hosts() as (a, b):
            got = {"a": bytearray(), "b": bytearray()}
            a_done, b_done = collecting_sink(a, got["a"]), collecting_sink(b, got["b"])
            outgoing = {"a": [await a.new_stream(b.get_id(), [SINK]) for _ in range(streams_each_way)],
                        "b": [await b.new_stream(a.get_id(), [SINK]) for _ in range(streams_each_way)]}
            conns = {"a": muxed_conn(a, b.get_id()), "b": muxed_conn(b, a.get_id())}
            tcp = {k: c.secured_conn.conn.read_writer.read_write_closer.stream for k, c in conns.items()}
            for t in tcp.values():  # small fixed buffers: a few frames fill them
                t.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
                t.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            stopped = {k: trio.Event() for k in tcp}
            resume = trio.Event()

            async def stop_reading(k: str) -> None:
                async with tcp[k].read_lock:  # the reader holds it in receive_some until bytes come: poked below
                    stopped[k].set()
                    await resume.wait()

            async def send_all_of(k: str) -> None:
                async with trio.open_nursery() as nursery:
                    for s in outgoing[k]:
                        nursery.start_soon(s.write, bytes([ord(k)]) * per_stream)

            async with trio.open_nursery() as nursery:
                for k, other in (("a", "b"), ("b", "a")):
                    nursery.start_soon(stop_reading, k)
                    with trio.fail_after(10):
                        while not stopped[k].is_set():  # poke k's reader out of receive_some
                            await conns[other]._write_frame(pack_yamux_header(TYPE_PING, FLAG_SYN, 0, 1))
                            await trio.sleep(0.05)
                for k in conns:  # the PING each reader will meet first, then more data than the sockets hold
                    await conns[k]._write_frame(pack_yamux_header(TYPE_PING, FLAG_SYN, 0, 2))
                for k in conns:
                    nursery.start_soon(send_all_of, k)
                with trio.fail_after(10):
                    while not all(c._write_lock.statistics().tasks_waiting for c in conns.values()):
                        await trio.sleep(0.01)  # every end has writers queued behind one blocked on its socket
                resume.set()
                with trio.fail_after(CONNECTION_WRITE_TIMEOUT_FOR_TEST):
                    while len(got["a"]) + len(got["b"]) < 2 * streams_each_way * per_stream:
                        await trio.sleep(0.05)
            assert got["a"] == b"b" * (streams_each_way * per_stream)
            assert got["b"] == b"a" * (streams_each_way * per_stream)
            assert session_alive(a, b.get_id()) and session_alive(b, a.get_id())
            assert not a_done.is_set() and not b_done.is_set()  # no stream ended: nothing was reset or closed

    trio.run(main)


CONNECTION_WRITE_TIMEOUT_FOR_TEST = 8.0  # below the muxer's 10 s frame-write bound, which would end a deadlock
