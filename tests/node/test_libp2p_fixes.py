"""Each py-libp2p work-around in p2p_fast/libp2p_fixes.py, with the bug it works around shown first."""

from __future__ import annotations

import trio
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast import libp2p_fixes
from p2p_fast.config import load_config_text
from p2p_fast.host_factory import build_host, listen_addrs
from p2p_fast.identity import load_or_create_identity


async def _dial_seconds(tmp_path, tag: str) -> float:
    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
    a = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-a"))
    b = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-b"))
    async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
        start = trio.current_time()
        await b.connect(PeerInfo(a.get_id(), [a.get_addrs()[0]]))
        took = trio.current_time() - start
        assert a.get_id() in b.get_connected_peers()
        return took


def test_dial_no_longer_waits_for_the_happy_eyeballs_timer(tmp_path):
    async def main() -> tuple[float, float]:
        libp2p_fixes.undo()
        try:
            stock = await _dial_seconds(tmp_path, "stock")
        finally:
            libp2p_fixes.apply()
        fixed = await _dial_seconds(tmp_path, "fixed")
        return stock, fixed

    stock, fixed = trio.run(main)
    # The bug: a successful single-address dial still takes the full 250 ms fallback timer.
    assert stock >= libp2p_fixes.STOCK_HAPPY_EYEBALLS_DELAY
    # With the work-around the same dial is not held back by it.
    assert fixed < stock - 0.15, (stock, fixed)
