"""p2p_fast.stack.patches.dial_first_success: a dial is not held back by py-libp2p's happy-eyeballs timer (stock
first, then patched)."""

from __future__ import annotations

import trio
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core.config import load_config_text
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.patches import dial_first_success


async def _dial_seconds(tmp_path, tag: str, stock: bool) -> float:
    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
    a = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-a"))
    b = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-b"))  # build_host applies every patch
    if stock:
        dial_first_success.revert()
    try:
        async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
            start = trio.current_time()
            await b.connect(PeerInfo(a.get_id(), [a.get_addrs()[0]]))
            took = trio.current_time() - start
            assert a.get_id() in b.get_connected_peers()
            await b.disconnect(a.get_id())  # before the swarms stop: no socket left for the collector
            return took
    finally:
        dial_first_success.apply()


def test_dial_no_longer_waits_for_the_happy_eyeballs_timer(tmp_path):
    async def main() -> tuple[float, float]:
        stock = await _dial_seconds(tmp_path, "stock", stock=True)
        fixed = await _dial_seconds(tmp_path, "fixed", stock=False)
        return stock, fixed

    stock, fixed = trio.run(main)
    # The bug: a successful single-address dial still takes the full 250 ms fallback timer.
    assert stock >= dial_first_success.STOCK_HAPPY_EYEBALLS_DELAY
    # With the patch the same dial is not held back by it.
    assert fixed < stock - 0.15, (stock, fixed)
