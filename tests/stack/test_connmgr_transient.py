"""Connections opened for one exchange (a DHT announcement) are closed when it ends, except to peers the node needs
or needs to keep its peer count: p2p_fast.stack.connmgr.ConnManager.transient, on real hosts over 127.0.0.1."""

from __future__ import annotations

from contextlib import AsyncExitStack

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID

from p2p_fast.stack import patches
from p2p_fast.stack.connmgr import ConnManager, Limits, peers_of
from p2p_fast.stack.muxer import FastYamux

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


async def _hosts_then(check) -> None:
    patches.apply_all()
    hosts = [new_host(key_pair=create_new_key_pair(), muxer_opt={YAMUX_PROTOCOL_ID: FastYamux}) for _ in range(5)]
    async with AsyncExitStack() as stack:
        for h in hosts:
            await stack.enter_async_context(h.run(LISTEN))
        try:
            await check(*hosts)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for peer in list(hosts[0].get_connected_peers()):
                    await hosts[0].disconnect(peer)


def test_connections_opened_inside_the_block_are_closed_after_it_except_needed_ones():
    async def check(a, old, fresh, guarded, valued) -> None:
        await a.connect(info_from_p2p_addr(old.get_addrs()[0]))
        mgr = ConnManager(a, Limits(low=16, high=24, grace=30))
        mgr.protect("tasks", peers_of({guarded.get_id()}))
        mgr.value(lambda peer: 1 if peer == valued.get_id() else 0)  # e.g. a GossipSub mesh peer
        async with mgr.transient(keep=1):
            for h in (fresh, guarded, valued):
                await a.connect(info_from_p2p_addr(h.get_addrs()[0]))
            assert len(a.get_connected_peers()) == 4
        assert set(a.get_connected_peers()) == {old.get_id(), guarded.get_id(), valued.get_id()}

    trio.run(_hosts_then, check)


def test_a_node_short_of_peers_keeps_what_it_dialed():
    async def check(a, b, c, d, e) -> None:
        mgr = ConnManager(a, Limits(low=16, high=24, grace=30))
        async with mgr.transient(keep=3):
            for h in (b, c, d, e):
                await a.connect(info_from_p2p_addr(h.get_addrs()[0]))
        assert len(a.get_connected_peers()) == 3  # one closed: 4 opened, 3 kept (the connector's target)

    trio.run(_hosts_then, check)


def test_a_peer_protected_while_the_trim_runs_is_not_closed():
    """The trim decides from a snapshot, then closes its victims one by one (each close awaits): a task assigned to
    a victim in between (the bootstrap of tests/node/test_connmgr_process.py closed the worker just given its task)
    makes it protected, and it must stay."""

    async def check(a, b, c, d, _e) -> None:
        for h in (b, c, d):
            await a.connect(info_from_p2p_addr(h.get_addrs()[0]))
        asked = {"n": 0}

        def task_assigned_after_the_snapshot(peer) -> bool:
            if peer != c.get_id():
                return False
            asked["n"] += 1
            return asked["n"] > 1  # not when the snapshot asked, every time after

        mgr = ConnManager(a, Limits(low=0, high=2, grace=0))
        mgr.protect("tasks", task_assigned_after_the_snapshot)
        await mgr.trim()
        assert set(a.get_connected_peers()) == {c.get_id()}

    trio.run(_hosts_then, check)


def test_a_trim_closes_its_victims_concurrently():
    """One close awaits the muxer, every notifee and the socket; one after another, a loaded bootstrap took minutes
    to close 54 peers and stayed above ``high`` all that time. The real close runs; the spy only counts how many are
    in progress at once."""

    async def check(a, b, c, d, e) -> None:
        for h in (b, c, d, e):
            await a.connect(info_from_p2p_addr(h.get_addrs()[0]))
        network = a.get_network()
        real_close = network.close_peer
        state = {"now": 0, "most": 0}

        async def counted_close(peer) -> None:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            try:
                await trio.sleep(0)  # let the others start, as a close waiting on the network does
                await real_close(peer)
            finally:
                state["now"] -= 1

        network.close_peer = counted_close
        try:
            mgr = ConnManager(a, Limits(low=0, high=1, grace=0))
            closed = await mgr.trim()
        finally:
            network.close_peer = real_close
        assert len(closed) == 4 and a.get_connected_peers() == []
        assert state["most"] == 4

    trio.run(_hosts_then, check)
