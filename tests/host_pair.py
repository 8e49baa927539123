"""Two in-process py-libp2p hosts (TCP + Noise + our FastYamux) connected over 127.0.0.1, for tests of what runs on
one connection. The connection is closed before the swarms stop: stopping a swarm with a live connection leaves the
dialer's socket unclosed, a ResourceWarning that fails whichever later test the garbage collector runs in."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID

from p2p_fast.stack import patches
from p2p_fast.stack.muxer import FastYamux

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


@asynccontextmanager
async def two_hosts(muxer_a: type = FastYamux, muxer_b: type = FastYamux) -> AsyncIterator[tuple]:
    patches.apply_all()  # as build_host does: the registered muxer class is used only with muxer_registered_class
    a = new_host(key_pair=create_new_key_pair(), muxer_opt={YAMUX_PROTOCOL_ID: muxer_a})
    b = new_host(key_pair=create_new_key_pair(), muxer_opt={YAMUX_PROTOCOL_ID: muxer_b})
    async with a.run(LISTEN), b.run(LISTEN):
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        try:
            yield a, b
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                if b.get_id() in a.get_connected_peers():
                    await a.disconnect(b.get_id())
