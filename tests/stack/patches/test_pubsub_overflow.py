"""A subscriber that falls behind: what its full buffer drops is counted per topic and reported in one warning,
not one py-libp2p warning per message (p2p_fast.stack.patches.pubsub_overflow), and the node reads on when it catches up."""

from __future__ import annotations

import logging

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast.core import metrics
from p2p_fast.core.config import load_config_text
from p2p_fast.stack.pubsub import Gossip
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.patches.pubsub_overflow import OverflowCountingSend, count_overflow
from p2p_fast.stack.patches.pubsub_subscription_buffer import SUBSCRIPTION_BUFFER

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
                await a.disconnect(b.get_id())  # before the swarms stop: no socket left for the collector
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


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_stock_logs_every_drop_and_counts_none_patched_counts_each_and_warns_once(libp2p_patched):
    """The same unread subscription overflowing by 50 messages, on a real Pubsub: stock py-libp2p logs a warning per
    dropped message and counts nothing; with ``count_overflow`` each drop is counted and one warning is logged (at
    most one per WARN_EVERY_S, each saying how many were dropped since the one before)."""
    topic = "overflow-stock-vs-ours"
    dropped_metric = metrics.MESSAGES_DROPPED.labels(topic, "subscriber-behind")

    async def overflow(counted: bool) -> tuple[list[str], list[str], float, int]:
        host = new_host(key_pair=create_new_key_pair())
        router = GossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12)
        pubsub = Pubsub(host, router)
        stock_log, ours_log = _Records(), _Records()
        logging.getLogger("libp2p.pubsub.pubsub").addHandler(stock_log)
        logging.getLogger("p2p_fast.stack.patches.pubsub_overflow").addHandler(ours_log)
        before = dropped_metric._value.get()
        try:
            async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]), \
                    background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                sub = await pubsub.subscribe(topic)  # nobody reads it
                if counted:
                    count_overflow(pubsub, topic)
                size = sub.receive_channel.statistics().max_buffer_size
                for i in range(size + 50):
                    pubsub.notify_subscriptions(rpc_pb2.Message(data=b"%d" % i, topicIDs=[topic]))
                return stock_log.messages, ours_log.messages, dropped_metric._value.get() - before, size
        finally:
            logging.getLogger("libp2p.pubsub.pubsub").removeHandler(stock_log)
            logging.getLogger("p2p_fast.stack.patches.pubsub_overflow").removeHandler(ours_log)

    stock_lines, stock_ours, stock_counted, size = trio.run(overflow, False)
    assert len(stock_lines) == 50 and all("fail to deliver message" in m for m in stock_lines)
    assert stock_ours == [] and stock_counted == 0  # the limit: no number an operator can alert on
    lines, ours, counted, _ = trio.run(overflow, True)
    assert lines == [] and counted == 50
    assert len(ours) == 1 and "the subscriber is behind" in ours[0], ours  # the next report says how many since
