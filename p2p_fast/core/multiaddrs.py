"""Parsing and small transformations of the multiaddrs users write in configs and flags.

Kept apart from the node so config validation can name a bad address precisely ("missing /tcp/<port>") before
anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import multiaddr
from libp2p.peer.id import ID

_DNS_PROTOCOLS = ("dns", "dns4", "dns6")
_IP_PROTOCOLS = ("ip4", "ip6")


@dataclass(frozen=True)
class PeerAddr:
    """A dialable TCP address, with the peer ID when the user gave one (``/p2p/<id>``)."""

    addr: multiaddr.Multiaddr  # without the /p2p part
    peer_id: ID | None
    host: str
    port: int
    is_dns: bool

    def with_peer(self, peer_id: ID) -> multiaddr.Multiaddr:
        return multiaddr.Multiaddr(f"{self.addr}/p2p/{peer_id}")


def parse_multiaddrs(texts: Iterable[str]) -> list[multiaddr.Multiaddr]:
    """The ``texts`` that parse as multiaddrs, in order; the rest skipped (addresses a peer advertised: one bad entry
    must not cost the good ones)."""
    out = []
    for text in texts:
        try:
            out.append(multiaddr.Multiaddr(text))
        except Exception:
            continue
    return out


def parse_peer_multiaddr(text: str, require_peer_id: bool = False) -> PeerAddr:
    """Parse ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/<id>]``; raise ValueError saying what is wrong."""
    if not isinstance(text, str) or not text.startswith("/"):
        raise ValueError(f"{text!r} is not a multiaddr (expected e.g. /ip4/127.0.0.1/tcp/4001/p2p/<peer-id>)")
    try:
        ma = multiaddr.Multiaddr(text)
    except Exception as exc:
        raise ValueError(f"{text!r} is not a valid multiaddr: {exc}") from None
    protos = [p.name for p in ma.protocols()]
    if not protos or protos[0] not in _IP_PROTOCOLS + _DNS_PROTOCOLS:
        raise ValueError(f"{text!r} must start with /ip4, /ip6, /dns, /dns4 or /dns6")
    if len(protos) < 2 or protos[1] != "tcp":
        raise ValueError(f"{text!r} is missing /tcp/<port> after the host")
    rest = protos[2:]
    if rest not in ([], ["p2p"]):
        raise ValueError(f"{text!r} has unsupported parts after /tcp/<port>: /{'/'.join(rest)}")
    peer_id = None
    if rest == ["p2p"]:
        try:
            peer_id = ID.from_base58(ma.value_for_protocol("p2p"))
        except Exception as exc:
            raise ValueError(f"{text!r} has an invalid peer ID: {exc}") from None
        ma = ma.decapsulate(multiaddr.Multiaddr(f"/p2p/{ma.value_for_protocol('p2p')}"))
    elif require_peer_id:
        raise ValueError(f"{text!r} needs a /p2p/<peer-id> part")
    host = ma.value_for_protocol(protos[0])
    port = int(ma.value_for_protocol("tcp"))
    if not 0 < port < 65536:
        raise ValueError(f"{text!r} has port {port} outside 1-65535")
    return PeerAddr(addr=ma, peer_id=peer_id, host=str(host), port=port, is_dns=protos[0] in _DNS_PROTOCOLS)


def tcp_endpoint(ma: multiaddr.Multiaddr) -> tuple[str, int] | None:
    """(ip, port) of an /ip4|ip6/../tcp/.. multiaddr, else None."""
    try:
        names = [p.name for p in ma.protocols()]
        if len(names) >= 2 and names[0] in _IP_PROTOCOLS and names[1] == "tcp":
            return str(ma.value_for_protocol(names[0])), int(ma.value_for_protocol("tcp"))
    except Exception:
        return None
    return None


def is_relayed(ma: multiaddr.Multiaddr) -> bool:
    return "/p2p-circuit" in str(ma)


def direct_transport_addr(host: Any, peer_id: ID) -> multiaddr.Multiaddr | None:
    """The address of a direct (not relayed) connection we have to ``peer_id``, if any."""
    for conn in host.get_network().get_connections(peer_id):
        try:
            for a in conn.get_transport_addresses():
                if not is_relayed(a):
                    return a
        except Exception:  # a connection closing under us has no addresses to give
            continue
    return None
