"""In-process py-libp2p hosts on 127.0.0.1 (stock ``new_host``: TCP, Noise, Yamux) for the relay tests: ``hosts(n)``
and ``relay_setup()`` (a relay R, a peer A holding a reservation on it, a peer B connected to it). Shared by
tests/nat/test_libp2p_relay_bugs.py and tests/stack/patches/ (circuit dialing, circuit addresses)."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP, CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast.protocols.nat.circuit import CircuitTransport
from p2p_fast.protocols.nat.relay import RELAY_LIMITS

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
DEAD = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1")  # nothing listens on port 1


def run(fn: Any) -> Any:
    return trio.run(fn)


@asynccontextmanager
async def hosts(n: int, **kw: Any) -> AsyncIterator[list[Any]]:
    hs = [new_host(key_pair=create_new_key_pair(), **kw) for _ in range(n)]
    async with AsyncExitStack() as stack:
        for h in hs:
            await stack.enter_async_context(h.run(LOOPBACK))
        try:
            yield hs
        finally:
            # Close connections before the swarms stop: stopping a swarm with live connections can leak sockets.
            with trio.move_on_after(5):
                for h in hs:
                    for pid in list(h.get_connected_peers()):
                        await h.disconnect(pid)


@asynccontextmanager
async def relay_setup(protocol_cls: type = CircuitV2Protocol) -> AsyncIterator[tuple[Any, Any, Any, Any]]:
    """R relays; A holds a reservation on R; B is connected to R. Yields (R, A, B, circuit address of A)."""
    async with hosts(3) as (r, a, b), AsyncExitStack() as stack:
        protos = [protocol_cls(h, limits=RELAY_LIMITS, allow_hop=(h is r)) for h in (r, a, b)]
        for p in protos:
            await stack.enter_async_context(background_trio_service(p))
        rinfo = PeerInfo(r.get_id(), r.get_addrs())
        await a.connect(rinfo)
        await b.connect(rinfo)
        a_transport = CircuitV2Transport(a, protos[1], RelayConfig(roles=RelayRole.STOP))
        async with trio.open_nursery() as nursery:
            stream = await a.new_stream(r.get_id(), [HOP])
            assert await a_transport.reserve(stream, r.get_id(), nursery)
            await stream.close()
            circuit = multiaddr.Multiaddr(f"{r.get_addrs()[0]}/p2p-circuit/p2p/{a.get_id()}")
            yield r, a, b, circuit
            nursery.cancel_scope.cancel()


def b_transport(b: Any) -> CircuitTransport:
    return CircuitTransport(b, CircuitV2Protocol(b), RelayConfig(roles=RelayRole.STOP))
