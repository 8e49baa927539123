"""Hole-punch dials bind to the transport's real listen addresses, not to the announced ones.

Upstream: ``libp2p/relay/circuit_v2/dcutr.py``, ``_local_tcp_listen_addrs`` (py-libp2p 0.8.1) takes "our TCP listen
addresses" -- the source address hole-punch dials bind to, and the port of our NAT-predicted address -- from
``host.get_addrs()``, which returns the *announced* addresses when ``announce_addrs`` is set. A node announcing,
say, a port-forwarded address then binds its dials to an address it does not own (EADDRNOTAVAIL) and predicts the
wrong port. No upstream issue was found.

The patch points the module function at one that reads the transport's listeners (``host.get_transport_addrs()``,
circuit addresses left out); everything else in DCUtR is unchanged.
Shown by ``tests/stack/patches/test_dcutr_listen_addrs.py``.
"""

from __future__ import annotations

from typing import Any

import libp2p.relay.circuit_v2.dcutr as _dcutr

from p2p_fast.core.multiaddrs import is_relayed
from p2p_fast.stack.patches._attrs import AttributePatch, Replacement

STOCK_LOCAL_TCP_LISTEN_ADDRS = vars(_dcutr)["_local_tcp_listen_addrs"]


def local_tcp_listen_addrs(host: Any) -> list[tuple[int, str, int]]:
    """Our TCP listen addresses as (family, ip, port), from the transport's listeners (not the announced list)."""
    out: list[tuple[int, str, int]] = []
    try:
        addrs = host.get_transport_addrs()
    except Exception:
        return STOCK_LOCAL_TCP_LISTEN_ADDRS(host)
    for addr in addrs:
        if is_relayed(addr):
            continue
        parsed = _dcutr._tcp_ip_port(addr)
        if parsed is not None:
            out.append(parsed)
    return out


PATCH = AttributePatch(Replacement(_dcutr, "_local_tcp_listen_addrs", local_tcp_listen_addrs))

apply = PATCH.apply
revert = PATCH.revert
