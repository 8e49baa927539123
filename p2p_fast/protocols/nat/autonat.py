"""AutoNAT v1: learn whether others can dial us, by asking peers to dial us back.

py-libp2p's ``AutoNATService`` has both halves; we use it with one correction (shown by a test in
``tests/nat/test_libp2p_relay_bugs.py``):

- **The dial-back never dials.** ``AutoNATService._try_dial`` calls ``host.connect(PeerInfo(peer, [addr]))``, which
  returns at once when a connection to ``peer`` exists -- and the requester is always connected, it is asking over
  that connection. So every request is answered OK and every node concludes it is public. :class:`AutoNAT` dials
  each address afresh (TCP + security handshake, which proves the peer ID answers there), bounded by
  ``dial_timeout``, and closes the probe connection; it never registers with the swarm, so the requester's
  connections are untouched. Circuit addresses are never dialed back (the spec forbids it: a relay is reachable,
  the requester may not be).

The client side (:meth:`AutoNAT.candidate_addrs`) advertises, besides our listen addresses, our NAT-predicted
address: the external IP peers observe us at (Identify) with our listen port, the same prediction DCUtR uses. Without
it a NATed node advertises only its private address, which no server may dial (it does not match the IP the server
sees), and the verdict would rest on a refusal instead of a real dial.

Why this is not in :mod:`p2p_fast.stack.patches`: :class:`AutoNAT` is a subclass we construct and run ourselves;
overriding ``_try_dial`` (private in py-libp2p 0.8.1, covered by the patches' version guard) changes only this
instance.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID, AutoNATService, AutoNATStatus
from libp2p.peer.id import ID
from libp2p.security.pnet.protector import new_protected_conn

from p2p_fast.core.multiaddrs import is_relayed, tcp_endpoint
from p2p_fast.core.netif import ipv4_addresses
from p2p_fast.stack.libp2p_internals import observed_addr_manager

log = logging.getLogger(__name__)

__all__ = ["AUTONAT_PROTOCOL_ID", "AutoNAT", "AutoNATStatus", "probe_dial"]

STATUS_NAMES = {AutoNATStatus.UNKNOWN: "unknown", AutoNATStatus.PUBLIC: "public", AutoNATStatus.PRIVATE: "private"}


async def probe_dial(host: IHost, addr: multiaddr.Multiaddr, peer_id: ID) -> None:
    """Open a fresh TCP connection to ``addr`` and run the security handshake expecting ``peer_id``; then close it.
    Raises on any failure. Nothing is registered with the swarm."""
    swarm: Any = host.get_network()
    if is_relayed(addr):
        raise ValueError("circuit addresses are not dialed back")
    if not str(addr).endswith(f"/p2p/{peer_id}"):
        addr = addr.encapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))
    transport = swarm.transport_manager.transport_for_dialing(addr)
    if transport is None:
        raise ValueError(f"no transport dials {addr}")
    raw = await transport.dial(addr)
    try:
        if getattr(swarm, "psk", None) is not None:
            raw = new_protected_conn(raw, swarm.psk)
        secured = await swarm.upgrader.upgrade_security(raw, True, peer_id)
        await secured.close()
    finally:
        try:
            await raw.close()
        except Exception:
            pass


class AutoNAT(AutoNATService):
    """py-libp2p's AutoNAT server and client with a dial-back that really dials (see module doc).

    ``confirmations`` is how many servers must agree before the status flips (py-libp2p's default, 4, suits large
    networks; ours may have one relay)."""

    def __init__(self, host: Any, serve: bool, dial_timeout: float, confirmations: int = 1) -> None:
        super().__init__(host, serve=serve, confirmations=confirmations)
        self.dial_timeout = dial_timeout
        self.dialbacks_served = 0
        self.dialbacks_ok = 0
        self.queries: dict[str, str] = {}  # server peer id -> "ok" | "failed: ..." (last verdict, for status)

    async def _try_dial(self, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        self.dialbacks_served += 1
        for raw in addrs:
            try:
                addr = multiaddr.Multiaddr(raw)
                with trio.fail_after(self.dial_timeout):
                    await probe_dial(self.host, addr, peer_id)
            except (Exception, trio.TooSlowError) as exc:
                log.debug("AutoNAT dial-back to %s at %s failed: %s", peer_id, raw, exc)
                continue
            self.dialbacks_ok += 1
            log.debug("AutoNAT dial-back to %s at %s succeeded", peer_id, addr)
            return raw
        return None

    # -- client ---------------------------------------------------------------------------------------------------
    def candidate_addrs(self, advertised: list[multiaddr.Multiaddr], predict: bool,
                        local_ips: set[str]) -> list[multiaddr.Multiaddr]:
        """Direct addresses to ask a server to dial: what we advertise (a wildcard stands for each local address)
        and, when ``predict``, ``<external IP>/tcp/<listen port>`` for every external IP Identify reported that is
        not one of ``local_ips`` (an observed IP of our own means no NAT in between: nothing to predict)."""
        direct: list[tuple[str, int]] = []
        for a in advertised:
            ep = tcp_endpoint(a)
            if ep is None or is_relayed(a):
                continue
            if ep[0] in ("0.0.0.0", "::"):
                direct.extend((ip, ep[1]) for ip in ipv4_addresses())
            else:
                direct.append(ep)
        predicted: list[tuple[str, int]] = []
        manager = observed_addr_manager(self.host)
        if predict and manager is not None:
            try:
                observed = [tcp_endpoint(a) for a in manager.addrs(min_observers=1)]
            except Exception as exc:
                log.debug("observed addresses unavailable: %s", exc)
                observed = []
            for ep in observed:
                if ep is not None and ep[0] not in local_ips:
                    predicted.extend((ep[0], port) for _ip, port in direct)
        out: list[multiaddr.Multiaddr] = []
        seen: set[str] = set()
        for ip, port in direct + predicted:
            proto = "ip6" if ipaddress.ip_address(ip).version == 6 else "ip4"
            text = f"/{proto}/{ip}/tcp/{port}"
            if text not in seen:
                seen.add(text)
                out.append(multiaddr.Multiaddr(text))
        return out

    async def ask(self, server: ID, candidates: list[multiaddr.Multiaddr], timeout: float) -> bool | None:
        """One dial-back request to ``server`` for ``candidates``; True = it reached us, False = it could not,
        None = no verdict (no answer)."""
        addrs = [a.to_bytes() for a in candidates]
        try:
            status, addr = await self.query_server(server, addrs=addrs, timeout=timeout)
        except (Exception, trio.TooSlowError) as exc:
            # An unanswered request says nothing about us; forget it rather than count it against us.
            self.dial_results.pop(server, None)
            self.queries[str(server)] = f"no answer: {type(exc).__name__}"
            return None
        ok = self.dial_results.get(server, False)
        self.queries[str(server)] = "ok" if ok else f"failed (status {status})"
        log.info("AutoNAT: %s %s us%s", server, "reached" if ok else "could not reach",
                 f" at {multiaddr.Multiaddr(addr)}" if ok and addr else "")
        return ok

    def status_name(self) -> str:
        return STATUS_NAMES.get(self.get_status(), "unknown")
