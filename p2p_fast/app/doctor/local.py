"""Checks that need only this machine: the config, the listen port, and whether mDNS can work here."""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path
from typing import Any

import trio

from p2p_fast.core.config import Config, ConfigError, load_config
from p2p_fast.core.netif import bind_error
from p2p_fast.app.doctor.report import OK, PROBLEM, Check

MDNS_GROUP = ("224.0.0.251", 5353)
MDNS_SERVICE = "_p2p._udp.local."  # py-libp2p's service type
BROWSE_S = 2.0


def check_config(path: str) -> tuple[Config | None, str | None, Check]:
    """Strict validation (what ``p2p-node`` does at start), the PSK and the API token it names."""
    from p2p_fast.stack.pnet import load_psk
    from p2p_fast.app.api.token import load_api_token

    try:
        cfg = load_config(path)
        psk = load_psk(cfg)
        load_api_token(cfg)
    except ConfigError as exc:
        return None, None, Check("config", PROBLEM, str(exc), "fix the key named above (README: Configuration)")
    except OSError as exc:
        return None, None, Check("config", PROBLEM, f"cannot read {path}: {exc.strerror}", "give the node's config")
    peers = len(cfg.network.bootstrap_peers)
    detail = (f"{path} is valid: role {cfg.node.role}, protocol_version {cfg.network.protocol_version!r}, "
              f"{peers} bootstrap address(es), {'private network (PSK)' if psk else 'no PSK'}, "
              f"data dir {cfg.data_path}")
    return cfg, psk, Check("config", OK, detail)


def check_listen_port(cfg: Config, running_url: str | None) -> Check:
    host, port = cfg.node.listen_host, cfg.node.listen_port
    if port == 0:
        return Check("listen port", OK, "node.listen_port is 0: the node picks a free port")
    if running_url is not None:
        return Check("listen port", OK, f"{host}:{port} is held by the node running on this data dir "
                                        f"(API {running_url})")
    exc = bind_error(host, port)
    if exc is not None:
        if exc.errno == errno.EADDRINUSE:
            return Check("listen port", PROBLEM, f"{host}:{port} is in use by another process",
                         f"stop it (ss -ltnp 'sport = :{port}' names it) or set node.listen_port / "
                         "--listen-port to a free port")
        return Check("listen port", PROBLEM, f"cannot bind {host}:{port}: {exc.strerror}",
                     "set node.listen_host to an address of this machine (0.0.0.0: all)")
    return Check("listen port", OK, f"{host}:{port} is free")


def _in_kubernetes() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) or Path("/var/run/secrets/kubernetes.io").exists()


def _multicast_route() -> str | None:
    """None when a datagram to the mDNS group can leave this host, else why not (ENETUNREACH: no route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(MDNS_GROUP)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _browse(seconds: float) -> int:
    """How many p2p services answer an mDNS browse (zeroconf, as py-libp2p's mDNS uses), in ``seconds``."""
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    found: set[str] = set()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change is ServiceStateChange.Added:
            found.add(name)

    zc = Zeroconf()
    try:
        ServiceBrowser(zc, MDNS_SERVICE, handlers=[on_change])
        time.sleep(seconds)  # a worker thread (trio.to_thread): answers arrive on zeroconf's own threads
    finally:
        zc.close()
    return len(found)


async def check_mdns(cfg: Config) -> Check:
    if not cfg.network.enable_mdns:
        return Check("mdns", OK, "network.enable_mdns is false: peers come from bootstrap addresses, the DHT and "
                                 "gossip")
    if _in_kubernetes():
        return Check("mdns", PROBLEM, "network.enable_mdns is true inside Kubernetes: pod networks are routed (no "
                                      "multicast between nodes) and the NetworkPolicy p2p-fast admits no UDP 5353",
                     "set network.enable_mdns: false (docs/deploy.md); discovery goes through the bootstrap "
                     "Service and the headless p2p-worker Service")
    why = _multicast_route()
    if why is not None:
        return Check("mdns", PROBLEM, f"mDNS is on but a datagram to 224.0.0.251:5353 cannot leave: {why}",
                     "add a multicast route (ip route add 224.0.0.0/4 dev <if>) or use bootstrap addresses")
    try:
        n = await trio.to_thread.run_sync(_browse, BROWSE_S)
    except OSError as exc:
        return Check("mdns", PROBLEM, f"mDNS is on but cannot listen on UDP 5353: {exc.strerror or exc}",
                     "free UDP 5353 or set network.enable_mdns: false")
    return Check("mdns", OK, f"on; multicast routable; {n} p2p service(s) answered a {BROWSE_S:.0f} s browse"
                             + (" (none: fine when no other node is on this network segment)" if n == 0 else ""))

