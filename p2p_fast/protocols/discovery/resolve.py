"""Name resolution for bootstrap addresses.

We resolve ``/dns4``/``/dns6``/``/dns`` names with the system resolver (``getaddrinfo``) ourselves rather than
through py-libp2p, for two reasons: it honours resolv.conf search domains (py-libp2p's resolver does not, so
short Kubernetes names would fail), and we need *every* A record of a headless service, one per pod, to dial them all.
"""

from __future__ import annotations

import socket

import multiaddr
import trio

from p2p_fast.core.multiaddrs import PeerAddr


async def resolve(target: PeerAddr) -> list[multiaddr.Multiaddr]:
    """All TCP multiaddrs a target stands for (one per distinct address); empty if the name does not resolve."""
    if not target.is_dns:
        return [target.addr]
    proto = [p.name for p in target.addr.protocols()][0]
    family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(proto, socket.AF_UNSPEC)
    try:
        infos = await trio.socket.getaddrinfo(target.host, target.port, family=family, type=socket.SOCK_STREAM)
    except (socket.gaierror, OSError):
        return []
    out: list[multiaddr.Multiaddr] = []
    seen: set[str] = set()
    for fam, _type, _proto, _canon, sockaddr in infos:
        ip = sockaddr[0]
        if ip in seen:
            continue
        seen.add(ip)
        ip_proto = "ip6" if fam == socket.AF_INET6 else "ip4"
        out.append(multiaddr.Multiaddr(f"/{ip_proto}/{ip}/tcp/{target.port}"))
    return out
