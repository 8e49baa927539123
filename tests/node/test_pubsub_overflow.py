"""A subscriber that falls behind: what its full buffer drops is counted per topic and reported in one warning,
not one py-libp2p warning per message (p2p_fast.stack.patches.pubsub_overflow), and the node reads on when it catches up."""

from __future__ import annotations

import logging

import trio
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core import metrics
from p2p_fast.core.config import load_config_text
from p2p_fast.stack.pubsub import Gossip
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.patches.pubsub_overflow import OverflowCountingSend
from p2p_fast.stack.patches.pubsub_tuning import SUBSCRIPTION_BUFFER

TOPIC = "overflow-test"


def test_a_subscriber_behind_drops_counted_with_one_warning(tmp_path, caplog):
    dropped_metric = metrics.MESSAGES_DROPPED.labels(TOPIC, "subscriber-behind")
    metric_before = dropped_metric._value.get()

    async def main() -> dict:
        cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
        a = build_host(cfg, load_or_create_identity(tmp_path / "a"))
        b = build_host(cfg, load_or_create_identity(tmp_path / "b"))
        got: list[bytes] = []
        release = trio.Event()

        async def slow_handler(_sender, data: bytes) -> None:
            got.append(data)
            if len(got) == 1:
                await release.wait()  # the reader stops here: B's subscriber is behind

        async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
            ga, gb = Gossip(a, cfg), Gossip(b, cfg)
            async with ga.running(), gb.running():
                await ga.subscribe(TOPIC, lambda s, d: None)
                await gb.subscribe(TOPIC, slow_handler)
                wrapper = gb.pubsub.subscribed_topics_send[TOPIC]
                await a.connect(PeerInfo(b.get_id(), [b.get_addrs()[0]]))
                with trio.fail_after(10):
                    while b.get_id() not in ga.router.mesh.get(TOPIC, set()):
                        await trio.sleep(0.02)
                queues = ga.pubsub.peer_queues
                sent = 0
                with trio.fail_after(60):
                    while wrapper.dropped < 200:
                        while any(len(q) >= 8 for q in queues.values()):  # never lose one on A's side
                            await trio.sleep(0.001)
                        await ga.publish(TOPIC, b"m%d" % sent)
                        sent += 1
                    # every message B took off the wire is either buffered (and will be read) or counted
                    while gb.push_tasks.in_flight or gb.push_tasks.handled < sent:
                        await trio.sleep(0.02)
                release.set()
                with trio.fail_after(20):
                    while len(got) + wrapper.dropped < sent:
                        await trio.sleep(0.02)
                    await ga.publish(TOPIC, b"after")  # caught up: new messages arrive again
                    while b"after" not in got:
                        await trio.sleep(0.02)
                return {"wrapper": wrapper, "sent": sent, "got": len(got) - 1}

    with caplog.at_level(logging.WARNING):
        out = trio.run(main)
    wrapper = out["wrapper"]
    assert isinstance(wrapper, OverflowCountingSend)
    assert out["got"] + wrapper.dropped == out["sent"], out
    assert out["got"] >= SUBSCRIPTION_BUFFER  # the whole buffer was delivered
    assert dropped_metric._value.get() - metric_before == wrapper.dropped
    ours = [r for r in caplog.records if r.name == "p2p_fast.stack.patches.pubsub_overflow"]
    assert len(ours) == 1 and "subscriber is behind" in ours[0].getMessage(), [r.getMessage() for r in ours]
    assert not [r for r in caplog.records if "fail to deliver message" in r.getMessage()]
