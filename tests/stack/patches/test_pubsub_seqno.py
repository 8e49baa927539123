"""p2p_fast.stack.patches.pubsub_seqno: a restarted node's messages are still forwarded (stock seqnos first, then
ours)."""

from __future__ import annotations

import trio

from p2p_fast.core.config import load_config_text
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.patches import pubsub_seqno


async def _forwarded_after_restart(tmp_path, tag: str, fixed: bool) -> bool:
    """A - B - C in a line. A publishes a burst, restarts with the same identity, publishes once more: does B still
    forward A's new message to C? (B delivers it locally either way; forwarding is what the bug breaks.)"""
    from libp2p.peer.peerinfo import PeerInfo as _PeerInfo

    from p2p_fast.stack.pubsub import Gossip

    topic = "seqno-restart"
    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
    key_a = load_or_create_identity(tmp_path / f"{tag}-a")
    b = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-b"))
    c = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-c"))
    at_c: list[bytes] = []

    def gossip(host):
        g = Gossip(host, cfg)
        if not fixed:
            g.pubsub.counter = pubsub_seqno.stock_seqno_start()
        return g

    async def publish_as_a(payloads: list[bytes]) -> None:
        a = build_host(cfg, key_a)
        async with a.run(listen_addrs=listen_addrs(cfg)):
            ga = gossip(a)
            async with ga.running():
                await ga.subscribe(topic, lambda s, d: None)
                await a.connect(_PeerInfo(b.get_id(), [b.get_addrs()[0]]))
                with trio.fail_after(10):
                    while (a.get_id() not in gb.router.mesh.get(topic, set())
                           or b.get_id() not in ga.router.mesh.get(topic, set())):
                        await trio.sleep(0.02)
                for p in payloads:
                    await ga.publish(topic, p)
                with trio.move_on_after(5):
                    while not set(payloads) <= set(at_c):
                        await trio.sleep(0.02)
                # End this life cleanly: B must see A leave before A comes back (in one process, py-libp2p does
                # not close a stopped host's connections by itself).
                await a.get_network().close_peer(b.get_id())
                with trio.fail_after(10):
                    while a.get_id() in gb.pubsub.peers:
                        await trio.sleep(0.02)

    async with b.run(listen_addrs=listen_addrs(cfg)), c.run(listen_addrs=listen_addrs(cfg)):
        gb, gc = gossip(b), gossip(c)
        async with gb.running(), gc.running():
            await gb.subscribe(topic, lambda s, d: None)
            await gc.subscribe(topic, lambda s, d: at_c.append(d))
            await c.connect(_PeerInfo(b.get_id(), [b.get_addrs()[0]]))
            burst = [f"before-{i}".encode() for i in range(30)]
            await publish_as_a(burst)
            assert set(burst) <= set(at_c), "the burst before the restart must reach C"
            await publish_as_a([b"after-restart"])
            return b"after-restart" in at_c


def test_a_restarted_node_does_not_reuse_its_message_sequence_numbers(tmp_path):
    """py-libp2p starts a node's pubsub seqno counter at the current time in *seconds* and adds one per
    message. A node that published more messages than it lived seconds reuses its old seqnos after a restart with
    the same identity; peers take the new messages for equivocation (same from+seqno, other data), do not forward
    them and charge the node -100 in its peer score. Starting the counter at the time in nanoseconds (as
    go-libp2p does) keeps the seqnos of every life of a node distinct."""
    assert trio.run(_forwarded_after_restart, tmp_path, "stock", False) is False
    assert trio.run(_forwarded_after_restart, tmp_path, "fixed", True) is True
