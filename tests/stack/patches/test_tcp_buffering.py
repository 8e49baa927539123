"""BufferedTCPStream (p2p_fast.stack.patches.tcp_buffering) returns exactly the bytes stock TrioTCPStream would, in order, never
more than asked for, with EOF after the buffer is drained; and the node's hosts use it."""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_fast.stack.patches import tcp_buffering
from p2p_fast.stack.patches.tcp_buffering import STOCK_TCP_STREAM, BufferedTCPStream


async def _through(cls: type, chunks: list[bytes], reads: list[int | None]) -> list[bytes]:
    """Send ``chunks`` over a real loopback TCP connection (a checkpoint between them), read with ``reads`` sizes
    (cycled) until EOF; the pieces read."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    out: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async def serve() -> None:
            server = await listeners[0].accept()
            async with server:
                for c in chunks:
                    await server.send_all(c)
                    await trio.sleep(0)
        nursery.start_soon(serve)
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        i = 0
        with trio.fail_after(20):
            while True:
                n = reads[i % len(reads)]
                i += 1
                data = await client.read(n)
                if n is not None:
                    assert len(data) <= n
                if not data:
                    break
                out.append(data)
        await client.close()
    for lst in listeners:
        await lst.aclose()
    return out


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=5000), min_size=0, max_size=12),
       reads=st.lists(st.one_of(st.none(), st.integers(1, 70000)), min_size=1, max_size=6))
def test_same_bytes_as_stock(chunks, reads):
    got = trio.run(_through, BufferedTCPStream, chunks, reads)
    assert b"".join(got) == b"".join(chunks)


def test_many_small_reads_of_a_burst_cost_one_receive():
    """A burst of 2-byte-length + body records (how Noise reads) is served mostly from the buffer."""
    calls = {"n": 0}

    payload = b"".join(len(b).to_bytes(2, "big") + b for b in (bytes(random.randrange(256) for _ in range(200))
                                                               for _ in range(100)))

    async def main() -> bytes:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            async def serve() -> None:
                server = await listeners[0].accept()
                async with server:
                    await server.send_all(payload)
            nursery.start_soon(serve)
            client = BufferedTCPStream(await trio.open_tcp_stream("127.0.0.1", port))
            stock_receive = client.stream.receive_some

            async def counting_receive(n=None):
                calls["n"] += 1
                return await stock_receive(n)

            client.stream.receive_some = counting_receive
            got = bytearray()
            with trio.fail_after(10):
                while len(got) < len(payload):
                    head = await client.read(2)
                    body = b""
                    while len(body) < int.from_bytes(head, "big"):
                        body += await client.read(int.from_bytes(head, "big") - len(body))
                    got += head + body
            await client.close()
        for lst in listeners:
            await lst.aclose()
        return bytes(got)

    assert trio.run(main) == payload
    assert calls["n"] < 20, calls  # 200 reads; stock makes one receive_some per read


@pytest.mark.parametrize("cls", [STOCK_TCP_STREAM, BufferedTCPStream], ids=["stock", "buffered"])
def test_eof_and_local_close_match_stock(cls):
    async def main():
        got = await _through(cls, [b"abc", b"defgh"], [2])
        assert b"".join(got) == b"abcdefgh"
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.close()
        assert await client.read(10) == b""  # closed locally: EOF, not an exception
        for lst in listeners:
            await lst.aclose()

    trio.run(main)


class _CountingSocket:
    """A real trio socket stream that counts ``receive_some`` calls (each one a syscall and a trip through trio)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.receives = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self.receives += 1
        return await self._stream.receive_some(max_bytes)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def test_small_reads_cost_one_receive_each_in_stock_and_a_few_buffered():
    """The limit the patch lifts: Noise reads a message as read(2) then read(len); stock asks the socket for every
    one of them even when the whole burst is already in the kernel buffer."""

    async def receives(cls: type) -> tuple[int, bytes]:
        frames = [len(b).to_bytes(2, "big") + b for b in (f"message {i}".encode() for i in range(100))]
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            async def serve() -> None:
                server = await listeners[0].accept()
                async with server:
                    await server.send_all(b"".join(frames))

            nursery.start_soon(serve)
            counting = _CountingSocket(await trio.open_tcp_stream("127.0.0.1", port))
            client = cls(counting)
            got = bytearray()
            with trio.fail_after(10):
                while True:
                    head = await client.read(2)
                    if not head:
                        break
                    while len(head) < 2:
                        head += await client.read(2 - len(head))
                    n = int.from_bytes(head, "big")
                    body = b""
                    while len(body) < n:
                        body += await client.read(n - len(body))
                    got += head + body
            await client.close()
        for lst in listeners:
            await lst.aclose()
        assert bytes(got) == b"".join(frames)
        return counting.receives, bytes(got)

    stock, _ = trio.run(receives, STOCK_TCP_STREAM)
    ours, _ = trio.run(receives, BufferedTCPStream)
    assert stock >= 200  # two receive_some per message (length, body), plus EOF
    assert ours <= 20, ours  # 100 messages of ~12 bytes arrive in a few segments: a few receives in all


def test_node_hosts_use_the_buffered_stream_and_stock_hosts_do_not(tmp_path):
    from libp2p.peer.peerinfo import PeerInfo

    from p2p_fast.core.config import load_config_text
    from p2p_fast.stack.host import build_host, listen_addrs
    from p2p_fast.stack.identity import load_or_create_identity

    async def stream_types(tag: str, stock: bool) -> set[type]:
        cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
        a = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-a"))  # build_host applies the patch
        b = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-b"))
        if stock:
            tcp_buffering.revert()
        try:
            async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
                await a.connect(PeerInfo(b.get_id(), [b.get_addrs()[0]]))
                kinds = set()
                for host, other in ((a, b), (b, a)):  # the dialer's side and the listener's side
                    conn = host.get_network().get_connections(other.get_id())[0]
                    # SwarmConn -> Yamux -> SecureSession -> Noise reader/writer -> RawConnection -> TCP stream
                    kinds.add(type(conn.muxed_conn.secured_conn.conn.conn.stream))
                await a.disconnect(b.get_id())
                return kinds
        finally:
            tcp_buffering.apply()

    tcp_buffering.revert()
    assert trio.run(stream_types, "stock", True) == {STOCK_TCP_STREAM}
    assert trio.run(stream_types, "ours", False) == {BufferedTCPStream}
