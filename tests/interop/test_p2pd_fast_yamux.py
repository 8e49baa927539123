"""Interop of our transport stack with go-libp2p (p2pd): the node's host (``p2p_fast.stack.host.build_host``: our
Yamux, ``p2p_fast.stack.muxer.FastYamux``) and the node's gossip (``p2p_fast.stack.pubsub.Gossip``: our pubsub tuning,
merged RPCs) against go-yamux and go-libp2p-pubsub, both directions, with enough bytes to need many window updates
each way.

Checks, per security protocol and dial direction: the connection runs our muxer; gossip of 250 messages of 4 KiB
(~1 MiB, four receive windows) arrives complete and exact both ways, so both sides' batched window updates and
the go side's credit reach each other; messages larger than one frame (100 KiB, 600 KiB) arrive intact both ways;
go verifies our signatures (strict) and we verify go's.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2p_fast.core.config import load_config_text
from p2p_fast.stack.pubsub import Gossip
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from testing.interop import AsyncP2PDaemon
from p2p_fast.stack.muxer import FastYamux

TOPIC = "p2p-network/interop-fast-yamux"
BULK_COUNT, BULK_SIZE = 250, 4096
BIG_SIZES = (100 * 1024, 600 * 1024)
CASE_DEADLINE = 90.0


def payload(tag: bytes, i: int, size: int) -> bytes:
    head = tag + i.to_bytes(4, "big")
    block = hashlib.sha256(head).digest()
    return (head + block * (size // len(block) + 1))[:size]


async def _case(p2pd_binary: str, security: str, go_dials: bool) -> None:
    cfg = load_config_text(
        "node: {listen_port: 0, listen_host: 127.0.0.1}\n"
        f"network: {{security: [{security}], enable_mdns: false}}\n"
        "gossip: {heartbeat_interval: 0.5}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        host = build_host(cfg, load_or_create_identity(Path(tmp)))
    received: list[bytes] = []
    got_one = trio.Event()

    def on_message(sender: ID, data: bytes) -> None:
        if sender == go_id:
            got_one.set()
            if data != b"warm-up":  # late copies of the warm-up round
                received.append(data)

    with trio.fail_after(CASE_DEADLINE):
        async with host.run(listen_addrs=listen_addrs(cfg)):
            async with Gossip(host, cfg).running() as gossip, AsyncP2PDaemon(p2pd_binary, security=(security,)) as go:
                go_id = ID.from_base58(go.peer_id)
                await gossip.subscribe(TOPIC, on_message)
                go_sub = await go.subscribe(TOPIC)
                if go_dials:
                    await go.connect(f"{host.get_addrs()[0]}")
                else:
                    await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(go.p2p_addrs[0])))
                await go.wait_for_topic_peer(TOPIC, host.get_id(), timeout=15)
                while go_id not in gossip.pubsub.peer_topics.get(TOPIC, set()) or not gossip.mesh_sizes()[TOPIC]:
                    await trio.sleep(0.05)
                (conn,) = host.get_network().get_connections(go_id)
                assert type(conn.muxed_conn) is FastYamux

                # Warm-up: both directions carry one message (mesh formed on both sides).
                while not got_one.is_set():
                    await go.publish(TOPIC, b"warm-up")
                    with trio.move_on_after(0.3):
                        await got_one.wait()
                while True:
                    await gossip.publish(TOPIC, b"warm-up")
                    try:
                        await go_sub.wait_for(lambda m: m.data == b"warm-up", 0.3)
                        break
                    except TimeoutError:
                        pass
                received.clear()
                go_sub.drain()

                # py -> go: ~1 MiB in 4 KiB messages, then messages bigger than a frame.
                ours = [payload(b"py", i, BULK_SIZE) for i in range(BULK_COUNT)]
                ours += [payload(b"PY", i, size) for i, size in enumerate(BIG_SIZES)]
                for data in ours:
                    await gossip.publish(TOPIC, data)
                    await trio.sleep(0.002)  # a steady pace: pubsub (go's and ours) drops past 32 queued RPCs
                got: list[bytes] = []
                while len(got) < len(ours):
                    msg = await go_sub.get(20)
                    if msg.data != b"warm-up":
                        got.append(msg.data)
                assert sorted(got) == sorted(ours)

                # go -> py: the same volume the other way.
                theirs = [payload(b"go", i, BULK_SIZE) for i in range(BULK_COUNT)]
                theirs += [payload(b"GO", i, size) for i, size in enumerate(BIG_SIZES)]
                for data in theirs:
                    await go.publish(TOPIC, data)
                    await trio.sleep(0.005)  # likewise
                while len(received) < len(theirs):
                    await trio.sleep(0.05)
                assert sorted(received) == sorted(theirs)

                # Both directions moved several windows' worth of bytes over our muxer.
                assert conn.muxed_conn.frames_received > BULK_COUNT // 8


@pytest.mark.parametrize("security", ["noise", "tls"])
@pytest.mark.parametrize("go_dials", [True, False], ids=["go_dials_us", "we_dial_go"])
def test_fast_yamux_with_go_libp2p(p2pd_binary: str, security: str, go_dials: bool) -> None:
    trio.run(_case, p2pd_binary, security, go_dials)
