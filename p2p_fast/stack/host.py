"""Build the py-libp2p host for a node: TCP, Noise and/or TLS, Yamux, connection limits, metrics channel.

This is the transport layer of the node. Everything here is py-libp2p configured, not re-implemented: the order of
``network.security`` is the order we propose security protocols in, ``node.max_connections`` becomes the swarm's
hard cap (inbound and outbound) with pruning watermarks below it, and ``network.connection_timeout`` bounds dials
and upgrades.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.tls.transport import PROTOCOL_ID as TLS_PROTOCOL_ID
from libp2p.security.tls.transport import TLSTransport

from p2p_fast.stack.patches import libp2p_fixes  # noqa: F401  (applies py-libp2p work-arounds)
from p2p_fast.core import metrics
from p2p_fast.stack.patches import gossip_idle, tcp_buffering
from p2p_fast.core.config import Config
from p2p_fast.stack.muxer import muxer_options
from p2p_fast.core.netif import ipv4_addresses


def security_options(cfg: Config, key_pair: KeyPair) -> "OrderedDict[Any, Any]":
    """Security transports in the configured order of preference."""
    opts: OrderedDict[Any, Any] = OrderedDict()
    for name in cfg.network.security:
        if name == "noise":
            opts[NOISE_PROTOCOL_ID] = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
        elif name == "tls":
            opts[TLS_PROTOCOL_ID] = TLSTransport(key_pair)
    return opts


def connection_config(cfg: Config) -> ConnectionConfig:
    cap = cfg.node.max_connections
    # Prune only above the hard cap: pruning at a lower watermark would make a small cap (2) hold just 1 peer.
    high = cap
    low = max(0, cap // 2)
    timeout = cfg.network.connection_timeout
    return ConnectionConfig(
        max_connections=cap,
        high_watermark=high,
        low_watermark=low,
        # py-libp2p reserves (min_connections) slots for outbound dials by capping inbound at max - min; a
        # bootstrap is almost all inbound, so reserve none: max_connections is then the real cap both ways.
        min_connections=0,
        dial_timeout=timeout,
        connection_timeout=timeout,
        inbound_upgrade_timeout=timeout,
        outbound_upgrade_timeout=timeout,
        outbound_stream_protocol_negotiation_timeout=timeout,
        inbound_stream_protocol_negotiation_timeout=timeout,
        grace_period=max(5.0, timeout),
    )


def listen_addrs(cfg: Config) -> list[multiaddr.Multiaddr]:
    """Where to listen. ``0.0.0.0`` with a fixed port becomes one listener per interface address: py-libp2p
    advertises its listen addresses verbatim (Identify, mDNS), and ``/ip4/0.0.0.0`` is undialable for everyone else.
    Loopback is left out when the machine has another address, so peers never dial themselves through it."""
    host, port = cfg.node.listen_host, cfg.node.listen_port
    if host == "0.0.0.0" and port != 0:
        ips = ipv4_addresses(include_loopback=False) or ["127.0.0.1"]
        return [multiaddr.Multiaddr(f"/ip4/{ip}/tcp/{port}") for ip in ips]
    proto = "ip6" if ":" in host else "ip4"
    return [multiaddr.Multiaddr(f"/{proto}/{host}/tcp/{port}")]


def build_host(cfg: Config, key_pair: KeyPair, psk: str | None = None) -> IHost:
    tcp_buffering.install()
    gossip_idle.apply()  # GossipSub heartbeats skip their per-peer work while idle (patches.gossip_idle)
    announce = [multiaddr.Multiaddr(a) for a in cfg.network.announce_addrs] or None
    host = new_host(
        key_pair=key_pair,
        sec_opt=security_options(cfg, key_pair),
        muxer_opt=muxer_options(),
        listen_addrs=listen_addrs(cfg),
        connection_config=connection_config(cfg),
        enable_metrics=True,
        enable_mDNS=cfg.network.enable_mdns,
        psk=psk,
        announce_addrs=announce,
        negotiate_timeout=max(1, int(cfg.network.connection_timeout)),
    )
    metrics.record_libp2p_metrics(host)  # py-libp2p's metric events recorded where they happen, no consumer task
    return host
