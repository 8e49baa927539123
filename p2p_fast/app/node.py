"""The node: one py-libp2p host and the behaviours every role runs on it.

Layering (one way): ``p2p_fast.stack`` (host, transport, security, muxer, pubsub, DHT, and the py-libp2p patches)
-> ``p2p_fast.protocols`` (presence, health, discovery, nat, tasks) -> the application (this module, the console,
the HTTP API), which only talks to :class:`Node`'s public methods. Start-up checks are in ``app.startup``, the peer
watcher in ``app.peer_watch``, the read-only views in ``app.node_views``.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast import __version__
from p2p_fast.app.node_views import NodeViews
from p2p_fast.app.peer_watch import start_mdns_bridge, watch_peers
from p2p_fast.app.startup import DataDirLock, NodeFailed, NodeStartError, check_port_free
from p2p_fast.core import metrics
from p2p_fast.core.config import Config
from p2p_fast.core.events import EventBus
from p2p_fast.core.netif import ipv4_addresses
from p2p_fast.protocols.codec import DecodeError, decode, encode
from p2p_fast.protocols.discovery.bootstrap import Bootstrapper
from p2p_fast.protocols.discovery.connector import Connector, outbound_target
from p2p_fast.protocols.health import HealthMonitor
from p2p_fast.protocols.messages import CapabilityAdvertisement, GossipText
from p2p_fast.protocols.presence import PeerBook, PeerRecord, Presence
from p2p_fast.stack.connmgr import ConnManager, Limits, mesh_value, peers_of
from p2p_fast.stack.dht import build_dht
from p2p_fast.stack.host import build_host
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.load_shed import LoadMonitor, Shedder
from p2p_fast.stack.patches.auto_connector_off import disable_auto_dials
from p2p_fast.stack.patches.gossip_ihave_shedding import shed_gossip_ihave
from p2p_fast.stack.pubsub import Gossip

if TYPE_CHECKING:
    from p2p_fast.protocols.nat import NatService

__all__ = ["DataDirLock", "Node", "NodeFailed", "NodeStartError"]

log = logging.getLogger(__name__)
SIGNATURE_ADDRS_EVERY = 5.0  # seconds the advertised addresses are reused for the presence signature


class Node(NodeViews):
    """A running p2p-fast node. Use ``async with node.running(): ...``.

    It owns the host and every behaviour on it and wires them together: each protocol gets the parts it uses
    (host, gossip, peer book, its config values), never the node. Its read-only views (status, peers, readiness)
    are in :class:`~p2p_fast.app.node_views.NodeViews`."""

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
        self.nat: NatService | None = None
        self.tasks: Any = None  # the task service, when the role runs one
        self.gossip_log: list[dict[str, Any]] = []  # recent broadcast texts, newest last
        self.gossip_listeners: list[Any] = []
        self._seq = 0
        self._sig_addrs: tuple[float, tuple[str, ...]] | None = None  # (when, advertised addresses) for the signature
        self._lock = DataDirLock(self.data_dir)
        self._nursery: trio.Nursery | None = None
        self.failure: str | None = None
        self.private_network = False
        self.api_token: str | None = None  # the HTTP API's bearer token (http.token_file, P2P_API_TOKEN)
        self.task_lane_port: int | None = None  # where the task lane listens (app.api.lane), set by the CLI
        self.events = EventBus()  # what GET /v1/events streams; a new stream id per process
        self.book.on_identified = self._on_identified

    # -- addresses ---------------------------------------------------------------------------------------------------
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

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def running(self) -> AsyncIterator["Node"]:
        cfg = self.cfg
        self._lock.acquire()
        try:
            check_port_free(cfg.node.listen_host, cfg.node.listen_port)
            key_pair = load_or_create_identity(self.data_dir)
            from p2p_fast.stack.host import listen_addrs
            from p2p_fast.stack.pnet import load_psk
            from p2p_fast.app.api.token import load_api_token

            psk = load_psk(cfg)
            self.private_network = psk is not None  # members only: who may send functions (tasks.functions)
            self.api_token = load_api_token(cfg)  # checked before anything starts: a bad one stops start-up
            self.host = host = build_host(cfg, key_pair, psk=psk)
            from p2p_fast.stack.patches.outbound_handshake_watch import watch_outbound_handshakes
            from p2p_fast.stack.patches.stream_handler_guard import guard_stream_handlers

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
                target = outbound_target(cfg.gossip.degree, cfg.network.conn_low, cfg.node.max_connections)
                self.connector = Connector(host, target_peers=target, dial_timeout=cfg.network.connection_timeout,
                                           room=connmgr.wants_more)
                self.bootstrapper = Bootstrapper(host, cfg.network.bootstrap_peers, cfg.network.rebootstrap_interval,
                                                 cfg.network.connection_timeout,
                                                 room=lambda: len(host.get_connected_peers()) < max(1, target // 2))
                self.presence = presence = Presence(
                    host, self.gossip, self.book, self, ads_topic=cfg.topic("capabilities"),
                    sync_protocols=(cfg.protocol_id("presence-sync", "1.1.0"), cfg.protocol_id("presence-sync")),
                    heartbeat_interval=cfg.node.heartbeat_interval,
                    sync_timeout=cfg.network.connection_timeout, shedder=self.shedder)
                await presence.start()
                await self.gossip.subscribe(cfg.topic("gossip"), self._on_gossip_text)
                from p2p_fast.protocols.nat import start_nat_services

                self.nat = await start_nat_services(host, cfg.network, self.role, self.book, self.dht, stack, nursery,
                                                    on_addrs_changed=presence.poke)
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
                nursery.start_soon(watch_peers, self)
                from p2p_fast.app.node_events import stats_loop

                nursery.start_soon(stats_loop, self)
                if cfg.network.enable_mdns:
                    start_mdns_bridge(self.connector, stack)
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
        disable_auto_dials(self.host)

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

    # -- messages -------------------------------------------------------------------------------------------------
    def advertisement(self) -> CapabilityAdvertisement:
        self._seq += 1
        slots, free, queued, load = self.load()
        return CapabilityAdvertisement(
            peer_id=str(self.peer_id), role=self.role, capabilities=self.capabilities, slots=slots,
            free_slots=free, queue_depth=queued, load=load, addrs=self.advertised_addrs(), seq=self._seq)

    def presence_signature(self) -> tuple[Any, ...]:
        """What, when it changes, is worth an advertisement before the next refresh (load alone is not)."""
        slots, free, _queued, _load = self.load()
        # Presence asks every second; building the host's addresses (multiaddr text, per address, per call) was 9 %
        # of an idle worker's CPU samples in a 100-node network. They change rarely (a listener, a relay
        # reservation), and a change may wait a few seconds: adverts for a changed signature are at most one per
        # heartbeat interval anyway.
        now = time.monotonic()
        if self._sig_addrs is None or now - self._sig_addrs[0] >= SIGNATURE_ADDRS_EVERY:
            self._sig_addrs = (now, tuple(self.advertised_addrs()))
        return (self.role, tuple(self.capabilities), self._sig_addrs[1], slots, free > 0)

    def load(self) -> tuple[int, int, int, float]:
        """(task slots, free slots, queued tasks, load average): what our advertisement and ``stats`` report."""
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

    def _on_identified(self, rec: PeerRecord) -> None:
        from p2p_fast.app.node_events import emit_identified

        emit_identified(self, rec)
