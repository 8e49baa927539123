"""Our GossipSub keeps the heartbeat it is configured with; py-libp2p's default "adaptive" gossip stretches a 1 s
heartbeat to 30-60 s as soon as its health score drops (docs/libp2p-pitfalls.md, pitfall 9)."""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core.config import GossipSection, load_config_text
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.pubsub import Gossip

TOPIC = "heartbeat-test"


def _count_heartbeats(router) -> list[float]:
    """The times of the router's heartbeats from now on (each begins with ``mesh_heartbeat``)."""
    beats: list[float] = []
    stock = router.mesh_heartbeat

    def mesh_heartbeat():
        beats.append(trio.current_time())
        return stock()

    router.mesh_heartbeat = mesh_heartbeat
    return beats


async def _heartbeat_after_a_health_check(tmp_path, adaptive: bool) -> float:
    """Two connected nodes meshed on one quiet topic (no message delivered: the health score py-libp2p computes is
    low), with the health check due at once instead of 30 s after start; the heartbeat interval a second later."""
    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
    a = build_host(cfg, load_or_create_identity(tmp_path / "a"))
    b = build_host(cfg, load_or_create_identity(tmp_path / "b"))
    async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
        ga, gb = Gossip(a, cfg), Gossip(b, cfg)
        if adaptive:
            ga.router.adaptive_gossip_enabled = True  # py-libp2p's default
        async with ga.running(), gb.running():
            await ga.subscribe(TOPIC, lambda s, d: None)
            await gb.subscribe(TOPIC, lambda s, d: None)
            await a.connect(PeerInfo(b.get_id(), [b.get_addrs()[0]]))
            with trio.fail_after(10):
                while b.get_id() not in ga.router.mesh.get(TOPIC, set()):
                    await trio.sleep(0.02)
            assert ga.router.heartbeat_interval == cfg.gossip.heartbeat_interval
            beats = _count_heartbeats(ga.router)
            ga.router.last_health_update = 0  # the health check, every 30 s, is due now
            start = len(beats)
            # Adaptive: the next heartbeat checks health and adapts in one synchronous step. Not adaptive: two
            # heartbeats later one whole heartbeat has run since the check came due.
            with trio.fail_after(10):
                while ga.router.last_health_update == 0 and len(beats) < start + 2:
                    await trio.sleep(0.02)
            interval = ga.router.heartbeat_interval
            await a.get_network().close_peer(b.get_id())
            return interval


@pytest.mark.parametrize("adaptive", [True, False], ids=["stock-adaptive", "ours"])
def test_a_quiet_mesh_keeps_its_configured_heartbeat_only_without_adaptive_gossip(tmp_path, adaptive):
    interval = trio.run(_heartbeat_after_a_health_check, tmp_path, adaptive)
    if adaptive:
        assert interval >= 30
    else:
        assert interval == GossipSection().heartbeat_interval < 30
