"""Bootstrap and relay addresses: resolved the way the node resolves them, then dialed step by step.

A throw-away libp2p host (new key, this config's security protocols and PSK, listening on 127.0.0.1 only) dials
each address the way the node would, one layer at a time so the first layer that fails is the one named: TCP
connect, the security handshake inside the PSK (a peer with another key fails exactly there), the peer ID when the
address names one, then Identify, whose protocol list shows the peer's ``protocol_version`` (our stream protocols
are ``/<protocol_version>/task/1.0.0`` and ``/<protocol_version>/blob/1.0.0``).
"""

from __future__ import annotations

import dataclasses
import errno
import re
import socket
from contextlib import asynccontextmanager
from typing import AsyncIterator

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core.config import Config
from p2p_fast.protocols.discovery.probe import ProbeError, probe_peer_id
from p2p_fast.core.multiaddrs import PeerAddr, parse_peer_multiaddr
from p2p_fast.stack.security.handshake import PSK_HINT, classify
from p2p_fast.app.doctor.report import OK, PROBLEM, SKIPPED, Check

RELAY_HOP = "/libp2p/circuit/relay/0.2.0/hop"
_OUR_PROTOCOL = re.compile(r"^/([^/]+)/(task|blob)/\d")
MAX_IDENTIFY_BYTES = 64 * 1024


@asynccontextmanager
async def probe_host(cfg: Config, psk: str | None) -> AsyncIterator[IHost]:
    from p2p_fast.stack.host import build_host

    throwaway = dataclasses.replace(
        cfg,
        node=dataclasses.replace(cfg.node, listen_host="127.0.0.1", listen_port=0),
        network=dataclasses.replace(cfg.network, enable_mdns=False, announce_addrs=[]))
    host = build_host(throwaway, create_new_key_pair(), psk=psk)
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        yield host


def resolv_conf() -> str:
    """The search domains and ndots getaddrinfo applies (what a short Kubernetes name needs)."""
    search, ndots = [], "1"
    try:
        for line in open("/etc/resolv.conf", encoding="utf-8"):
            parts = line.split()
            if parts[:1] == ["search"]:
                search = parts[1:]
            elif parts[:1] == ["options"]:
                ndots = next((p.split(":")[1] for p in parts[1:] if p.startswith("ndots:")), ndots)
    except OSError:
        return "no /etc/resolv.conf"
    return f"search {' '.join(search) or '(none)'}, ndots {ndots}"


async def resolve(target: PeerAddr) -> tuple[list[str], str | None]:
    """Every address of ``target`` (getaddrinfo: /etc/hosts, resolv.conf search domains), or why none."""
    if not target.is_dns:
        return [target.host], None
    proto = [p.name for p in target.addr.protocols()][0]
    family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(proto, socket.AF_UNSPEC)
    try:
        infos = await trio.socket.getaddrinfo(target.host, target.port, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        kind = {socket.EAI_NONAME: "no such name", socket.EAI_AGAIN: "temporary failure: no DNS server answered"}
        return [], f"{kind.get(exc.errno, exc.strerror)} ({resolv_conf()})"
    ips: list[str] = []
    for _fam, _t, _p, _c, sockaddr in infos:
        if sockaddr[0] not in ips:
            ips.append(sockaddr[0])
    return ips, None


def _ip_addr(ip: str, port: int) -> multiaddr.Multiaddr:
    return multiaddr.Multiaddr(f"/{'ip6' if ':' in ip else 'ip4'}/{ip}/tcp/{port}")


async def _tcp(ip: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection opens, else why not (one plain connect, so the errno is the kernel's)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with trio.move_on_after(timeout), trio.socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            await sock.connect((ip, port))
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                return "connection refused: nothing listens there (closed port)"
            return f"cannot connect: {exc.strerror or exc}"
        return None
    return f"no answer in {timeout:g} s (a firewall or NetworkPolicy dropping the port, or the host is down)"


async def _identify(host: IHost, peer: ID, timeout: float) -> list[str]:
    with trio.fail_after(timeout):
        stream = await host.new_stream(peer, [IDENTIFY])
        data = b""
        try:
            while len(data) < MAX_IDENTIFY_BYTES:
                chunk = await stream.read(MAX_IDENTIFY_BYTES)
                if not chunk:
                    break
                data += chunk
        except Exception:
            pass  # the responder closes after one message; py-libp2p may raise instead of returning b""
        finally:
            await stream.close()
    return list(parse_identify_response(data).protocols)


async def dial(host: IHost, cfg: Config, psk: str | None, target: PeerAddr, ip: str,
               timeout: float) -> tuple[Check, list[str]]:
    """One address, layer by layer; the protocols the peer announced when every layer worked."""
    where = f"{ip}:{target.port}"
    name = f"dial {where}"
    why = await _tcp(ip, target.port, timeout)
    if why is not None:
        return Check(name, PROBLEM, f"TCP: {why}",
                     f"is the node running and listening on {target.port}? check the Service's ports, firewalls "
                     "and NetworkPolicies on the way"), []
    addr = _ip_addr(ip, target.port)
    try:
        with trio.fail_after(timeout):
            peer = await probe_peer_id(host, addr)
    except (ProbeError, trio.TooSlowError) as exc:
        what = "no answer to the security handshake" if isinstance(exc, trio.TooSlowError) else str(exc)
        if psk is not None:
            return Check(name, PROBLEM, f"TCP ok; security handshake failed: {what}: PSK mismatch", PSK_HINT), []
        hint = ("the peer may run a private network (PSK): give this config its key (network.psk_file or P2P_PSK)"
                f"; or it offers none of network.security {cfg.network.security}")
        kind = classify(exc, private=False) or "handshake"
        return Check(name, PROBLEM, f"TCP ok; security handshake failed ({kind}): {what}", hint), []
    if target.peer_id is not None and peer != target.peer_id:
        return Check(name, PROBLEM, f"handshake ok but the peer is {peer}, not {target.peer_id} as the address says",
                     "update /p2p/<id> in the address (the peer has a new identity) or drop it"), []
    try:
        with trio.fail_after(timeout):
            host.get_network().unblock_peer(peer)  # type: ignore[attr-defined]
            await host.connect(PeerInfo(peer, [addr]))
        protocols = await _identify(host, peer, timeout)
    except Exception as exc:
        return Check(name, PROBLEM, f"handshake ok (peer {peer}) but the connection failed: {exc!r}",
                     "see the peer's log; the muxer or Identify failed"), []
    finally:
        try:
            await host.disconnect(peer)
        except Exception:
            pass
    ours = cfg.network.protocol_version
    versions = sorted({m.group(1) for p in protocols if (m := _OUR_PROTOCOL.match(p))})
    if ours not in versions:
        if versions:
            return Check(name, PROBLEM, f"peer {peer} speaks protocol_version {', '.join(map(repr, versions))}, "
                                        f"this config {ours!r}: the nodes are in different networks",
                         "set the same network.protocol_version on every node"), protocols
        return Check(name, PROBLEM, f"peer {peer} announces none of our protocols (/{ours}/task/1.0.0): not a "
                                    "p2p-fast node?", "check the address points at a p2p-fast node"), protocols
    return Check(name, OK, f"TCP, handshake{' inside the PSK' if psk else ''}, peer {peer}, "
                           f"protocol_version {ours!r}"), protocols


async def _check_addresses(host: IHost, cfg: Config, psk: str | None, kind: str, addrs: list[str],
                           timeout: float, need: str | None = None) -> list[Check]:
    out: list[Check] = []
    for text in addrs:
        try:
            target = parse_peer_multiaddr(text)
        except ValueError as exc:
            out.append(Check(f"{kind} {text}", PROBLEM, str(exc), "fix the multiaddr in the config"))
            continue
        ips, why = await resolve(target)
        if not ips:
            out.append(Check(f"{kind} {text}", PROBLEM, f"{target.host} does not resolve: {why}",
                             "check the name (kubectl -n net-test get svc), the DNS server in /etc/resolv.conf, "
                             "and use the fully qualified name"))
            continue
        if target.is_dns:
            out.append(Check(f"{kind} {text}", OK, f"{target.host} -> {', '.join(ips)} ({len(ips)} A record(s))"))
        for ip in ips:
            check, protocols = await dial(host, cfg, psk, target, ip, timeout)
            if check.status == OK and need is not None and need not in protocols:
                check = Check(check.name, PROBLEM, f"reachable but does not serve {need}",
                              "set network.enable_relay: true on the relay node")
            out.append(check)
    return out


async def check_bootstrap_peers(host: IHost, cfg: Config, psk: str | None, timeout: float) -> list[Check]:
    addrs = cfg.network.bootstrap_peers
    if not addrs:
        if cfg.node.role == "bootstrap":
            return [Check("bootstrap", OK, "none configured: this node is an entry point")]
        if cfg.network.enable_mdns:
            return [Check("bootstrap", OK, "none configured: peers come from mDNS on this network segment only")]
        return [Check("bootstrap", PROBLEM, "network.bootstrap_peers is empty: this node only meets peers that dial "
                                            "it or that mDNS finds",
                      "add the bootstrap's address, e.g. /dns4/p2p-bootstrap.net-test.svc.cluster.local/tcp/4001")]
    return await _check_addresses(host, cfg, psk, "bootstrap", addrs, timeout)


async def check_relays(host: IHost, cfg: Config, psk: str | None, timeout: float) -> list[Check]:
    if not cfg.network.relay_addrs:
        why = "relays are found through the network (nodes with role relay)" if cfg.network.enable_relay else \
            "network.enable_relay is false"
        return [Check("relay", SKIPPED, f"no network.relay_addrs; {why}")]
    return await _check_addresses(host, cfg, psk, "relay", cfg.network.relay_addrs, timeout, need=RELAY_HOP)
