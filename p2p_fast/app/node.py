"""The node: one py-libp2p host and the behaviours every role runs on it.

Layering (one way): ``host_factory`` (transport, security, muxer) -> py-libp2p services (Pubsub/GossipSub, Kademlia,
Identify, Ping, mDNS, relay) -> our behaviours (presence, health, discovery, tasks) -> the application (console,
HTTP API) which only talks to :class:`Node`'s public methods.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import time
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast import __version__
from p2p_fast.core import metrics
from p2p_fast.core.config import Config
from p2p_fast.stack.connmgr import ConnManager, Limits, mesh_value, peers_of
from p2p_fast.stack.dht import build_dht
from p2p_fast.core.events import EventBus
from p2p_fast.protocols.discovery.bootstrap import Bootstrapper
from p2p_fast.protocols.discovery.connector import Connector
from p2p_fast.stack.pubsub import Gossip
from p2p_fast.protocols.health import HealthMonitor
from p2p_fast.stack.host import build_host
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.load_shed import LoadMonitor, Shedder, shed_gossip_ihave
from p2p_fast.core.multiaddrs import is_relayed
from p2p_fast.core.netif import bind_error, ipv4_addresses
from p2p_fast.protocols.codec import DecodeError, decode, encode
from p2p_fast.protocols.messages import CapabilityAdvertisement, GossipText
from p2p_fast.protocols.presence import PeerBook, Presence

log = logging.getLogger(__name__)
KAD_PROTOCOL = "/ipfs/kad/1.0.0"
OFFERS_PER_ROUND = 16  # live peers offered to the connector each second
FULL_CHECK_EVERY = 30  # rounds (seconds) between looks at every peer's protocols for the DHT routing table


class NodeStartError(RuntimeError):
    """The node cannot start for a reason the user can fix (port in use, data dir locked, ...)."""


class NodeFailed(NodeStartError):
    """The node stopped because it could not go on safely (its journal cannot be written); says why."""


class DataDirLock:
    """An exclusive lock on the data dir: two nodes sharing one identity would confuse everybody."""

    def __init__(self, data_dir: os.PathLike[str] | str) -> None:
        self.path = os.path.join(data_dir, "node.lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise NodeStartError(f"data dir {os.path.dirname(self.path)} is not usable: {exc.strerror}; "
                                 "give the node a writable --data-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NodeStartError(
                f"data dir {os.path.dirname(self.path)} is in use by another p2p-node (pid {other}); "
                "give this one its own --data-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    exc = bind_error(host, port)
    if exc is None:
        return
    if exc.errno == errno.EADDRINUSE:
        raise NodeStartError(f"listen port {port} on {host} is already in use; stop the other process or use "
                             "--listen-port 0 to pick a free port")
    raise NodeStartError(f"cannot listen on {host}:{port}: {exc.strerror}")


class Node:
    """A running p2p-fast node. Use ``async with node.running(): ...``."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.role = cfg.node.role
        self.data_dir = cfg.data_path
        self.started_at = time.monotonic()
        self.host: IHost | None = None
        self.gossip: Gossip | None = None
        self.dht: KadDHT | None = None
        self.health: HealthMonitor | None = None
        self.bootstrapper: Bootstrapper | None = None
        self.connector: Connector | None = None
        self.connmgr: ConnManager | None = None
        self.book = PeerBook(cfg.node.heartbeat_interval)
        self.presence: Presence | None = None
        self.shedder = Shedder()
        self.nat: Any = None
        self.tasks: Any = None  # the task service, when the role runs one
        self.gossip_log: list[dict[str, Any]] = []  # recent broadcast texts, newest last
        self.gossip_listeners: list[Any] = []
        self._seq = 0
        self._lock = DataDirLock(self.data_dir)
        self._nursery: trio.Nursery | None = None
        self.failure: str | None = None
        self.private_network = False
        self.api_token: str | None = None  # the HTTP API's bearer token (http.token_file, P2P_API_TOKEN)
        self.events = EventBus()  # what GET /v1/events streams; a new stream id per process
        self.book.on_identified = self._on_identified

    # -- identity and addresses ---------------------------------------------------------------------------------
    @property
    def peer_id(self) -> ID:
        assert self.host is not None
        return self.host.get_id()

    def listen_addrs(self) -> list[multiaddr.Multiaddr]:
        assert self.host is not None
        return list(self.host.get_addrs())

    def advertised_addrs(self) -> list[str]:
        """Concrete addresses others can dial: a 0.0.0.0 listener stands for every local IPv4 address."""
        out: list[str] = []
        for a in self.listen_addrs():
            text = str(a)
            if "/ip4/0.0.0.0/" in text:
                out.extend(text.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/") for ip in ipv4_addresses())
            else:
                out.append(text)
        return out

    @property
    def capabilities(self) -> list[str]:
        caps = list(self.cfg.node.capabilities)
        if self.cfg.tasks.accept_functions and self.cfg.tasks.slots > 0 and "functions" not in caps:
            caps.append("functions")  # what the dispatchers route function tasks by (tasks.functions)
        return caps

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def running(self) -> AsyncIterator["Node"]:
        cfg = self.cfg
        self._lock.acquire()
        try:
            _check_port_free(cfg.node.listen_host, cfg.node.listen_port)
            key_pair = load_or_create_identity(self.data_dir)
            from p2p_fast.stack.host import listen_addrs
            from p2p_fast.stack.pnet import load_psk
            from p2p_fast.app.api.token import load_api_token

            psk = load_psk(cfg)
            self.private_network = psk is not None  # members only: who may send functions (tasks.functions)
            self.api_token = load_api_token(cfg)  # checked before anything starts: a bad one stops start-up
            self.host = host = build_host(cfg, key_pair, psk=psk)
            from p2p_fast.stack.security.handler_guard import guard_stream_handlers
            from p2p_fast.stack.security.handshake import watch_outbound_handshakes

            # A PSK mismatch is named as one.
            watch_outbound_handshakes(host, private=psk is not None,
                                      connection_timeout=cfg.network.connection_timeout)
            guard_stream_handlers(host)  # a failing stream handler ends its stream, not the node
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(host.run(listen_addrs=listen_addrs(cfg)))
                if not host.get_addrs():
                    raise NodeStartError(f"could not listen on {cfg.node.listen_host}:{cfg.node.listen_port}")
                self._nursery = nursery = await stack.enter_async_context(trio.open_nursery())
                self.gossip = await stack.enter_async_context(Gossip(host, cfg).running())
                if hasattr(self.gossip.router, "gossip_heartbeat"):
                    shed_gossip_ihave(self.gossip.router, self.shedder)
                self.dht = build_dht(host, self._dht_mode())
                self.dht.shedder = self.shedder
                await stack.enter_async_context(background_trio_service(self.dht))
                self.health = HealthMonitor(host, cfg.node.heartbeat_interval, cfg.network.connection_timeout)
                self.connmgr = connmgr = ConnManager(host, Limits.from_config(
                    cfg.network.conn_low, cfg.network.conn_high, cfg.network.conn_grace_period,
                    cfg.node.max_connections))
                self.connector = Connector(host, target_peers=min(cfg.gossip.degree_high, cfg.node.max_connections),
                                           dial_timeout=cfg.network.connection_timeout, room=connmgr.wants_more)
                self.bootstrapper = Bootstrapper(host, cfg.network.bootstrap_peers, cfg.network.rebootstrap_interval,
                                                 cfg.network.connection_timeout, room=connmgr.wants_more)
                self.presence = Presence(self, self.book)
                await self.presence.start()
                await self.gossip.subscribe(cfg.topic("gossip"), self._on_gossip_text)
                from p2p_fast.protocols.nat import start_nat_services

                self.nat = await start_nat_services(self, stack, nursery)
                from p2p_fast.app.task_env import task_env
                from p2p_fast.protocols.tasks import start_task_service
                from p2p_fast.protocols.tasks.journal import StorageError

                try:
                    self.tasks = await start_task_service(task_env(self), stack)
                except StorageError as exc:
                    self.fail(str(exc))
                    raise
                self._protect_connections(connmgr)
                nursery.start_soon(connmgr.run)
                nursery.start_soon(LoadMonitor(self.shedder).run)
                nursery.start_soon(self.health.run)
                nursery.start_soon(self.bootstrapper.run)
                nursery.start_soon(self.connector.run)
                nursery.start_soon(self.presence.run)
                nursery.start_soon(self._watch_peers)
                from p2p_fast.app.node_events import stats_loop

                nursery.start_soon(stats_loop, self)
                if cfg.network.enable_mdns:
                    self._start_mdns_bridge(stack)
                metrics.NODE_INFO.labels(str(host.get_id()), self.role, __version__).set(1)
                log.info("node up: role=%s id=%s addrs=%s", self.role, host.get_id(),
                         " ".join(map(str, host.get_addrs())))
                if not cfg.network.bootstrap_peers and self.role != "bootstrap":
                    log.warning("no network.bootstrap_peers: this %s meets only peers that dial it%s (e.g. "
                                "/dns4/p2p-bootstrap.net-test.svc.cluster.local/tcp/4001 in a cluster)", self.role,
                                " or that mDNS finds on this network segment" if cfg.network.enable_mdns else "")
                try:
                    yield self
                finally:
                    log.info("node stopping")
                    with trio.move_on_after(1.0) as goodbye:
                        goodbye.shield = True
                        await self.presence.goodbye()
                        await trio.sleep(0.05)  # the per-peer senders take it off their queues
                    nursery.cancel_scope.cancel()
        finally:
            self._lock.release()
            if self.failure is not None:
                # Raised last, outside every scope the shutdown cancelled, so it cannot be lost on the way out.
                raise NodeFailed(self.failure)

    def _protect_connections(self, connmgr: ConnManager) -> None:
        """What the connection manager must never prune (p2p_fast.stack.connmgr), and py-libp2p's own auto-dialer off:
        it dials every peer in the peerstore (everyone identify, gossip or the DHT ever named) up to the midpoint
        of the swarm's watermarks, which rebuilt a full mesh behind the manager's back. Our connector dials."""
        assert self.host is not None and self.bootstrapper is not None and self.gossip is not None
        connmgr.value(mesh_value(self.gossip.router))
        connmgr.protect("bootstrap", peers_of(self.bootstrapper.bootstrap_peers))
        if self.nat is not None:
            connmgr.protect("relay", peers_of(self.nat.reservations))
        if self.tasks is not None:
            connmgr.protect("tasks", self.tasks.busy_with)
        auto = getattr(self.host.get_network(), "auto_connector", None)
        if auto is not None:
            async def no_auto_dials() -> None:
                return None

            auto.maybe_connect = no_auto_dials

    def fail(self, reason: str) -> None:
        """Stop the node: it cannot go on safely (e.g. its journal cannot be written). ``running()`` then raises
        :class:`NodeFailed` with ``reason`` once everything is closed, and ``p2p-node`` exits 1 printing it."""
        if self.failure is None:
            self.failure = reason
            log.critical("stopping the node: %s", reason)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _dht_mode(self) -> DHTMode:
        mode = self.cfg.network.dht_mode
        if mode == "client":
            return DHTMode.CLIENT
        return DHTMode.SERVER

    def _start_mdns_bridge(self, stack: AsyncExitStack) -> None:
        """py-libp2p's mDNS only fills the peerstore and emits an event; we dial what it finds."""
        assert self.connector is not None
        connector = self.connector
        token = trio.lowlevel.current_trio_token()

        def on_found(info: PeerInfo) -> None:
            # Called on zeroconf's browser thread, not in trio: hop into the trio loop to queue the dial.
            addrs = [a for a in info.addrs if "/ip4/0.0.0.0/" not in str(a) and "/ip6/::/" not in str(a)]
            log.info("mDNS found %s at %s", info.peer_id, " ".join(map(str, addrs)) or "(no dialable address)")
            if not addrs:
                return
            try:
                trio.from_thread.run_sync(connector.offer_now, PeerInfo(info.peer_id, addrs), trio_token=token)
            except trio.RunFinishedError:
                pass

        peerDiscovery.register_peer_discovered_handler(on_found)
        stack.callback(peerDiscovery.unregister_peer_discovered_handler, on_found)

    async def _watch_peers(self) -> None:
        """Keep gauges, the DHT routing table and the connector in step with who we are connected to."""
        assert self.host is not None and self.dht is not None and self.connector is not None
        host, dht = self.host, self.dht
        known: set[ID] = set()
        pending_kad: set[ID] = set()
        rounds = 0
        while True:
            peers = set(host.get_connected_peers())
            metrics.PEERS.set(len(peers))
            metrics.CONNECTIONS.set(sum(len(c) for c in host.get_network().get_connections_map().values()))
            metrics.UPTIME.set(time.monotonic() - self.started_at)
            metrics.DHT_PEERS.set(dht.get_routing_table_size())
            self.update_health_gauges()
            if peers != known:
                from p2p_fast.app.node_events import emit_peer_changes

                emit_peer_changes(self, peers - known, known - peers)
            fresh = peers - known
            if fresh and self.presence is not None:
                self.presence.poke()
            rounds += 1
            # New peers at once, everyone again every FULL_CHECK_EVERY rounds (a peer's protocols arrive with
            # Identify, after the connection): per-peer work every second was an idle cost that grew with peers.
            look_at = peers if rounds % FULL_CHECK_EVERY == 0 else fresh | (pending_kad & peers)
            pending_kad.clear()
            for pid in look_at:
                if dht.routing_table.peer_in_table(pid):
                    continue
                try:
                    protocols = host.get_peerstore().get_protocols(pid)
                except Exception:
                    continue
                if not protocols:
                    pending_kad.add(pid)  # Identify not done yet: look again next round
                if KAD_PROTOCOL in protocols:
                    try:
                        await dht.add_peer(pid)
                    except Exception as exc:
                        log.debug("routing table refused %s: %s", pid, exc)
            # Candidates for the connector only while it is short of peers, and a bounded sample: parsing every
            # address of the view each second was a cost that grew with the network.
            live = self.book.live() if len(peers) < self.connector.target_peers else []
            for rec in random.sample(live, min(len(live), OFFERS_PER_ROUND)):
                try:
                    pid = ID.from_base58(rec.peer_id)
                except Exception:
                    continue
                addrs = []
                for a in rec.addrs:
                    try:
                        addrs.append(multiaddr.Multiaddr(a))
                    except Exception:
                        continue
                self.connector.offer(pid, addrs)
            known = peers
            await trio.sleep(1.0)

    # -- messages -------------------------------------------------------------------------------------------------
    def advertisement(self) -> CapabilityAdvertisement:
        self._seq += 1
        slots, free, queued, load = self._load()
        return CapabilityAdvertisement(
            peer_id=str(self.peer_id), role=self.role, capabilities=self.capabilities, slots=slots,
            free_slots=free, queue_depth=queued, load=load, addrs=self.advertised_addrs(), seq=self._seq)

    def presence_signature(self) -> tuple[Any, ...]:
        """What, when it changes, is worth an advertisement before the next refresh (load alone is not)."""
        slots, free, _queued, _load = self._load()
        return (self.role, tuple(self.capabilities), tuple(self.advertised_addrs()), slots, free > 0)

    def _load(self) -> tuple[int, int, int, float]:
        if self.tasks is not None:
            return self.tasks.load()
        return 0, 0, 0, os.getloadavg()[0]

    async def publish_text(self, text: str) -> None:
        assert self.gossip is not None
        msg = GossipText(sender=str(self.peer_id), text=text, sent_at=time.time())
        await self.gossip.publish(self.cfg.topic("gossip"), encode(msg))

    async def _on_gossip_text(self, sender: ID, data: bytes) -> None:
        try:
            msg = decode(data)
        except DecodeError as exc:
            metrics.MESSAGES_REJECTED.labels(self.cfg.topic("gossip"), exc.reason).inc()
            log.warning("dropped gossip from %s: %s", sender, exc)
            return
        if not isinstance(msg, GossipText):
            metrics.MESSAGES_REJECTED.labels(self.cfg.topic("gossip"), "wrong-type").inc()
            return
        item = {"sender": str(sender), "text": msg.text, "sent_at": msg.sent_at, "received_at": time.time()}
        self.gossip_log.append(item)
        self.events.emit("gossip", item)
        del self.gossip_log[:-1000]
        for listener in list(self.gossip_listeners):
            listener(str(sender), msg.text, msg.sent_at)

    def _on_identified(self, rec: Any) -> None:
        from p2p_fast.app.node_events import emit_identified

        emit_identified(self, rec)

    # -- views for the console and the API ------------------------------------------------------------------------
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
            "listening": host is not None and bool(host.get_addrs()),
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
