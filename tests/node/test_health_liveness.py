"""Liveness (p2p_fast.protocols.health) over real TCP + Noise + Yamux connections: a peer that sends us traffic is not pinged,
a slow peer is not dropped, and a peer that neither sends nor answers is closed after MISSES_BEFORE_CLOSE checks
with the reason counted."""

from __future__ import annotations


import pytest
import trio
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.stream_muxer.yamux.yamux import FLAG_SYN, TYPE_PING

from p2p_fast._ext import pack_yamux_header

from p2p_fast.core import metrics
from p2p_fast.protocols.health import MISSES_BEFORE_CLOSE, HealthMonitor, frames_received
from host_pair import two_hosts

SINK = "/p2p-fast/test/sink/1.0.0"


def unresponsive_closes() -> float:
    return metrics.CONNECTIONS_PRUNED.labels("unresponsive")._value.get()


class PingAnswerer:
    """A ping handler that leaves its first ``busy`` pings unanswered (the peer too busy: the pinger gives up
    first) and echoes every later one; ``calls`` counts the pings that reached it."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.calls = 0

    async def __call__(self, stream) -> None:
        self.calls += 1
        try:
            data = await stream.read(32)
            if self.calls <= self.busy:
                await trio.sleep_forever()
            await stream.write(data)
        except Exception:
            pass


async def sink(stream) -> None:
    try:
        while await stream.read(65536):
            pass
    except Exception:
        pass


def test_a_peer_that_sends_traffic_is_not_pinged():
    async def main() -> HealthMonitor:
        async with two_hosts() as (a, b):
            a.set_stream_handler(SINK, sink)
            monitor = HealthMonitor(a, interval=0.2, timeout=2.0)
            stream = await b.new_stream(a.get_id(), [SINK])
            for _ in range(6):
                before = frames_received(a, b.get_id()) or 0
                await stream.write(b"gossip-like traffic")
                with trio.fail_after(10):  # the frame has reached a's muxer (a loaded machine may take a while)
                    while (frames_received(a, b.get_id()) or 0) <= before:
                        await trio.sleep(0.01)
                await monitor._check(b.get_id())
            assert b.get_id() in a.get_connected_peers()
            await stream.close()
            return monitor

    monitor = trio.run(main)
    assert monitor.pings_sent == 1  # the first check has nothing to compare with
    assert monitor.pings_skipped == 5


def test_traffic_on_a_new_connection_counts_although_the_old_one_had_more():
    """Liveness compares the data frames received since the last check. Counted as one total over the peer's
    connections, a replaced connection (closed and redialled in between, its counter starting again at 0) read as
    silence until the new one overtook the old one's count: live peers were pinged, and under load closed, in
    100-node join storms ("sent nothing" about a connection that had carried 241 data frames in 25 s)."""
    from libp2p.peer.peerinfo import info_from_p2p_addr

    async def main() -> HealthMonitor:
        async with two_hosts() as (a, b):
            a.set_stream_handler(SINK, sink)
            monitor = HealthMonitor(a, interval=0.2, timeout=2.0)

            async def send(count: int) -> None:
                stream = await b.new_stream(a.get_id(), [SINK])
                for _ in range(count):
                    before = frames_received(a, b.get_id()) or 0
                    await stream.write(b"traffic")
                    with trio.fail_after(10):
                        while (frames_received(a, b.get_id()) or 0) <= before:
                            await trio.sleep(0.01)
                await stream.close()

            await send(1)
            await monitor._check(b.get_id())  # the first check pings: nothing to compare with
            await send(20)
            await monitor._check(b.get_id())
            await a.disconnect(b.get_id())
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
            await send(1)  # fewer frames on the new connection than the old one had
            await monitor._check(b.get_id())
            return monitor

    monitor = trio.run(main)
    assert monitor.pings_sent == 1
    assert monitor.pings_skipped == 2


def test_a_peer_that_misses_two_pings_is_not_dropped():
    """A peer too busy to answer two pings in a row (CPU overload) but alive: two missed pings used to close it."""

    async def main() -> tuple[bool, int, int]:
        async with two_hosts() as (a, b):
            busy_then_answers = PingAnswerer(busy=MISSES_BEFORE_CLOSE - 1)
            b.set_stream_handler(PING_PROTOCOL, busy_then_answers)
            await trio.sleep(0.7)  # past the muxers' first RTT ping exchange (then one every 30 s)
            monitor = HealthMonitor(a, interval=0.1, timeout=0.05)
            before = unresponsive_closes()
            for _ in range(MISSES_BEFORE_CLOSE + 1):
                await monitor._check(b.get_id())
            return b.get_id() in a.get_connected_peers(), int(unresponsive_closes() - before), busy_then_answers.calls

    connected, closes, calls = trio.run(main)
    assert calls >= MISSES_BEFORE_CLOSE
    assert connected
    assert closes == 0


async def _muxer_answers_a_ping(conn) -> None:
    """Send a Yamux ping on ``conn`` and wait for the other end's muxer to answer it (as it does every 30 s on a
    live connection, whatever its application does)."""
    frames = conn.frames_received
    conn._ping_event = trio.Event()
    conn._ping_sent_time = trio.current_time()
    await conn._write_frame(pack_yamux_header(TYPE_PING, FLAG_SYN, 0, 1))
    with trio.fail_after(10):
        while conn.frames_received == frames:
            await trio.sleep(0.01)


@pytest.mark.parametrize("muxer_answers", [False, True], ids=["silent", "muxer-alive-streams-dead"])
def test_a_silent_peer_is_closed_after_the_misses_with_its_reason(muxer_answers):
    """Silent, or only its muxer answering (RTT pings, stream acknowledgements) while nothing above it serves a
    stream: muxer frames are not an answer, and such a link passed for alive forever."""

    async def main() -> tuple[list[bool], int]:
        async with two_hosts() as (a, b):
            async def never_answers(stream) -> None:
                await trio.sleep_forever()

            b.set_stream_handler(PING_PROTOCOL, never_answers)
            await trio.sleep(0.7)  # past the muxers' first RTT ping exchange (then one every 30 s)
            conn = a.get_network().get_connections(b.get_id())[0].muxed_conn
            monitor = HealthMonitor(a, interval=0.1, timeout=0.05)
            before = unresponsive_closes()
            alive = []
            for _ in range(MISSES_BEFORE_CLOSE):
                if muxer_answers:
                    await _muxer_answers_a_ping(conn)
                await monitor._check(b.get_id())
                alive.append(b.get_id() in a.get_connected_peers())
            return alive, int(unresponsive_closes() - before)

    alive, closes = trio.run(main)
    assert alive == [True] * (MISSES_BEFORE_CLOSE - 1) + [False]
    assert closes == 1


def test_stock_ping_service_fails_every_ping_after_one_timed_out_ping():
    """Why health pings on streams of their own. py-libp2p 0.8.1's PingService keeps its outbound stream per peer
    and forgets it only on an ``Exception``; a timeout is a cancellation, so the stream stays cached. The next ping
    then calls ``stream.is_closed()``, but ``NetStream.is_closed`` is a property (a bool): TypeError, before any byte
    is sent, on every later ping to that peer. One slow answer under load was thus always followed by a "failed"
    ping, and the old monitor closed the connection on the second failure."""
    from libp2p.host.ping import PingService

    async def main() -> tuple[int, list[str]]:
        async with two_hosts() as (a, b):
            busy_once = PingAnswerer(busy=1)
            b.set_stream_handler(PING_PROTOCOL, busy_once)
            service = PingService(a)
            outcomes = []
            for _ in range(3):
                with trio.move_on_after(0.2):
                    try:
                        await service.ping(b.get_id())
                        outcomes.append("answered")
                    except TypeError:
                        outcomes.append("TypeError")
                    continue
                outcomes.append("timeout")
            monitor = HealthMonitor(a, interval=0.1, timeout=1.0)
            ours = await monitor.ping_once(b.get_id())  # a fresh stream: the (now answering) peer answers
            outcomes.append("ours answered" if ours is not None else "ours failed")
            return busy_once.calls, outcomes

    calls, outcomes = trio.run(main)
    assert outcomes == ["timeout", "TypeError", "TypeError", "ours answered"]
    assert calls == 2  # the stock pings after the first never reached the peer

