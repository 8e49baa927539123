"""p2p_fast.stack.patches.outbound_handshake_watch: a dial between two private networks (different PSKs) fails in
both cases; stock says nothing about why and counts nothing, watched it is counted as a PSK mismatch (or a
handshake timeout) within the handshake's share of the connection timeout. The undo removes the wrapper."""

from __future__ import annotations

import trio
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core.config import load_config_text
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.patches.outbound_handshake_watch import watch_outbound_handshakes
from p2p_fast.stack.security import handshake
from p2p_fast.stack.security.metrics import HANDSHAKE_FAILURES

PSK_A = "a" * 64
PSK_B = "b" * 64
TIMEOUT = 4.0


def _reported() -> float:
    return sum(HANDSHAKE_FAILURES.labels(r)._value.get() for r in (handshake.PSK_MISMATCH, handshake.HANDSHAKE_TIMEOUT))


async def _dial_across_networks(tmp_path, tag: str, watched: bool) -> tuple[bool, float, float]:
    """B (network B) dials A (network A): (connected, reports counted, seconds taken)."""
    cfg = load_config_text(f"node: {{listen_port: 0, listen_host: 127.0.0.1}}\nnetwork: {{connection_timeout: {TIMEOUT}}}\n")
    a = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-a"), psk=PSK_A)
    b = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-b"), psk=PSK_B)
    undo = watch_outbound_handshakes(b, private=True, connection_timeout=TIMEOUT) if watched else None
    before = _reported()
    connected = False
    async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
        start = trio.current_time()
        with trio.move_on_after(3 * TIMEOUT):
            try:
                await b.connect(PeerInfo(a.get_id(), [a.get_addrs()[0]]))
                connected = True
            except Exception:
                pass
        took = trio.current_time() - start
    if undo is not None:
        undo()
        assert "upgrade_outbound_raw_conn" not in vars(b.get_network())
    return connected, _reported() - before, took


def test_a_psk_mismatch_is_reported_only_when_watched(tmp_path):
    stock_connected, stock_reports, _ = trio.run(_dial_across_networks, tmp_path, "stock", False)
    assert not stock_connected and stock_reports == 0  # the limit: a failure that does not say why
    connected, reports, _ = trio.run(_dial_across_networks, tmp_path, "watched", True)
    assert not connected and reports >= 1
