"""p2p_fast.stack.patches.dcutr_listen_addrs: hole-punch dials bind to the real listen addresses (stock first: the
announced ones; then patched)."""

from __future__ import annotations

import libp2p.relay.circuit_v2.dcutr as _dcutr
import multiaddr

from p2p_fast.stack.patches import dcutr_listen_addrs
from relay_hosts import hosts, run


def test_bug_dcutr_uses_announced_addresses_as_listen_addresses_and_work_around():
    async def main() -> tuple[list, list, int]:
        announced = multiaddr.Multiaddr("/ip4/198.51.100.7/tcp/4999")
        async with hosts(1, announce_addrs=[announced]) as (h,):
            real_port = int(h.get_transport_addrs()[0].value_for_protocol("tcp"))
            dcutr_listen_addrs.revert()
            try:
                stock = _dcutr._local_tcp_listen_addrs(h)
            finally:
                dcutr_listen_addrs.apply()
            ours = _dcutr._local_tcp_listen_addrs(h)
            return stock, ours, real_port

    stock, ours, port = run(main)
    assert stock == [(4, "198.51.100.7", 4999)]  # bug 9: would bind hole-punch dials to an address not ours
    assert ours == [(4, "127.0.0.1", port)]
