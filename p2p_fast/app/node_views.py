"""The node as the console, the HTTP API and the dashboard see it: connected peers, status, capabilities, health
checks and readiness. Read-only views over the parts :class:`~p2p_fast.app.node.Node` owns; kept apart from the
node's lifecycle so each reads alone."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from libp2p.peer.id import ID

from p2p_fast import __version__
from p2p_fast.core import metrics
from p2p_fast.core.multiaddrs import is_relayed

if TYPE_CHECKING:
    from libp2p.abc import IHost
    from libp2p.kad_dht.kad_dht import KadDHT

    from p2p_fast.core.config import Config
    from p2p_fast.protocols.discovery.bootstrap import Bootstrapper
    from p2p_fast.protocols.health import HealthMonitor
    from p2p_fast.protocols.nat import NatService
    from p2p_fast.protocols.presence import PeerBook
    from p2p_fast.stack.pubsub import Gossip


class NodeViews:
    """Mixed into :class:`~p2p_fast.app.node.Node`, which sets these attributes."""

    cfg: Config
    role: str
    started_at: float
    host: IHost | None
    gossip: Gossip | None
    dht: KadDHT | None
    health: HealthMonitor | None
    bootstrapper: Bootstrapper | None
    book: PeerBook
    nat: NatService | None
    tasks: Any
    failure: str | None

    @property
    def peer_id(self) -> ID:
        assert self.host is not None
        return self.host.get_id()

    @property
    def capabilities(self) -> list[str]:
        caps = list(self.cfg.node.capabilities)
        if self.cfg.tasks.accept_functions and self.cfg.tasks.slots > 0 and "functions" not in caps:
            caps.append("functions")  # what the dispatchers route function tasks by (tasks.functions)
        return caps

    def listen_addrs(self) -> list[Any]:
        assert self.host is not None
        return list(self.host.get_addrs())

    def peers(self) -> list[dict[str, Any]]:
        assert self.host is not None
        out = [self.peer_doc(pid) for pid in self.host.get_connected_peers()]
        out.sort(key=lambda p: p["peer_id"])
        return out

    def peer_doc(self, pid: ID) -> dict[str, Any]:
        """One connected peer as ``/v1/peers`` and ``peer`` events show it."""
        assert self.host is not None and self.health is not None
        addr = ""
        relayed = False
        for conn in self.host.get_network().get_connections(pid):
            addrs = conn.get_transport_addresses() if hasattr(conn, "get_transport_addresses") else []
            if addrs:
                addr = str(addrs[0])
                relayed = relayed or is_relayed(addrs[0])
        rec = self.book.get(str(pid))
        rtt = self.health.rtt.get(pid)
        return {
            "peer_id": str(pid),
            "addr": addr,
            "relayed": relayed,
            "role": rec.role if rec else "?",
            "capabilities": rec.capabilities if rec else [],
            "rtt_ms": round(rtt * 1000, 2) if rtt is not None else None,
            "live": bool(rec and self.book.is_live(rec)),
            "clock_offset_s": round(rec.clock_offset, 3) if rec and rec.clock_offset is not None else None,
            "clock_samples": len(rec.clock_samples) if rec else 0,
        }

    def status(self) -> dict[str, Any]:
        assert self.host is not None and self.gossip is not None and self.dht is not None
        conns = self.host.get_network().get_connections_map()
        doc: dict[str, Any] = {
            "role": self.role,
            "peer_id": str(self.peer_id),
            "version": __version__,
            "listen_addrs": [str(a) for a in self.listen_addrs()],
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "peers": len(conns),
            "connections": sum(len(c) for c in conns.values()),
            "topics": self.gossip.mesh_sizes(),
            "dht": {"mode": self.dht.mode.name.lower() if hasattr(self.dht.mode, "name") else str(self.dht.mode),
                    "routing_table": self.dht.get_routing_table_size()},
            "live_peers": len(self.book.live()),
            "capabilities": self.capabilities,
            "ready": self.ready(),
        }
        if self.nat is not None:
            doc["nat"] = self.nat.status()
        if self.tasks is not None:
            doc["tasks"] = self.tasks.counts()
            if hasattr(self.tasks, "ledger_status"):
                doc["ledger"] = self.tasks.ledger_status()
        return doc

    def capability_view(self) -> dict[str, Any]:
        """This node's capabilities, and which live peers offer each capability."""
        network: dict[str, list[str]] = {}
        for rec in self.book.live():
            for cap in rec.capabilities:
                network.setdefault(cap, []).append(rec.peer_id)
        return {"node": self.capabilities, "network": network}

    def health_checks(self) -> dict[str, bool]:
        """The checks behind ``p2p_node_health{check}``: ``listening`` (the host has addresses), ``bootstrapped``
        (first bootstrap round done, or no bootstrap addresses to dial), ``peers`` (connected to one, or a lone
        entry point), ``storage`` (the task journal is writable: the node has not failed)."""
        host, boot = self.host, self.bootstrapper
        lone = not self.cfg.network.bootstrap_peers
        return {
            # the swarm's listeners, not host.get_addrs(): that builds every address with its /p2p part (and
            # circuit addresses) and ran every second for the gauges (15 % of an idle 5-node worker's CPU)
            "listening": host is not None and bool(getattr(host.get_network(), "listeners", None)),
            "bootstrapped": boot is not None and (lone or boot.done_first_round.is_set()),
            "peers": host is not None and (lone or bool(host.get_connected_peers())),
            "storage": self.failure is None,
        }

    def update_health_gauges(self) -> None:
        for check, ok in self.health_checks().items():
            metrics.NODE_HEALTH.labels(check).set(1 if ok else 0)
        metrics.NODE_READY.set(1 if self.ready() else 0)

    def ready(self) -> bool:
        """Ready = bootstrapped (first round done) and connected to at least one peer (a lone bootstrap with no
        bootstrap addresses of its own is ready as soon as it listens: it *is* the entry point)."""
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        """:meth:`ready` and, when not ready, why (for /readyz): the bootstrap addresses tried and what each did."""
        if self.host is None or self.bootstrapper is None:
            return False, "starting"
        if not self.cfg.network.bootstrap_peers:
            return True, "no bootstrap addresses: an entry point"
        if not self.bootstrapper.done_first_round.is_set():
            return False, self.bootstrapper.not_ready_reason()
        if not self.host.get_connected_peers():
            return False, self.bootstrapper.not_ready_reason()
        return True, "connected"
