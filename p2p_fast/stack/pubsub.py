"""GossipSub for our topics, configured sanely, with our message-id and seen-cache hot paths plugged in.

py-libp2p's defaults would cap every peer at 10 msg/s per topic (spam protection) and heartbeat every 120 s; we turn
spam protection off (peer scoring and per-peer limits are the place for that), heartbeat at ``gossip
.heartbeat_interval`` (its "adaptive" rescaling off: it would stretch it to 30-60 s) and give the mesh degrees
explicitly. ``network.mesh_network: false`` selects FloodSub.
Every message is signed and strictly verified; a refused one is counted with its reason and charged to the peer
that forwarded it in GossipSub's peer score (``p2p_fast.stack.pubsub_guard``). The Pubsub's per-instance py-libp2p
patches (tuning, seqno, push tasks, overflow counting: :mod:`p2p_fast.stack.patches`) are applied here, on the
instance this class builds; the process-wide ones must be applied already (``build_host`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.floodsub import FloodSub
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.tools.anyio_service import background_trio_service

from p2p_fast.core import metrics
from p2p_fast.core.config import Config
from p2p_fast.stack import pubsub_guard as gossip_guard
from p2p_fast.stack.patches.gossip_lazy_degree import set_lazy_degree
from p2p_fast.stack.patches.gossip_opportunistic_graft import graft_opportunistically_as_specified
from p2p_fast.stack.patches.gossip_prune_backoff import back_off_pruned_peers
from p2p_fast.stack.patches.pubsub_overflow import count_overflow
from p2p_fast.stack.patches.pubsub_hello_race import announce_late_subscriptions
from p2p_fast.stack.patches.pubsub_stream_retry import retry_negotiation_failures
from p2p_fast.stack.patches.pubsub_replay_own import replay_only_own
from p2p_fast.stack.patches.pubsub_seqno import start_seqno_from_nanoseconds
from p2p_fast.stack.patches.pubsub_tasks import PushSpawningManager, spawn_pushes_in
from p2p_fast.stack.patches.pubsub_tuning import tune_pubsub

log = logging.getLogger(__name__)

GOSSIP_PROTOCOLS = ["/meshsub/1.1.0", "/meshsub/1.0.0"]
FLOODSUB_PROTOCOL = "/floodsub/1.0.0"

Handler = Callable[[ID, bytes], Awaitable[None] | None]


class Gossip:
    """Owns the router and Pubsub; topic handlers are plain callbacks (they must not block the reader)."""

    def __init__(self, host: IHost, cfg: Config) -> None:
        self.cfg = cfg
        g = cfg.gossip
        if cfg.network.mesh_network:
            self.router: Any = GossipSub(
                protocols=GOSSIP_PROTOCOLS,
                degree=g.degree,
                degree_low=g.degree_low,
                degree_high=g.degree_high,
                heartbeat_interval=g.heartbeat_interval,  # type: ignore[arg-type]  # floats work; annotated int
                heartbeat_initial_delay=0.1,
                gossip_window=g.gossip_window,
                gossip_history=max(5, g.gossip_window),
                spam_protection_enabled=False,
                time_to_live=int(max(g.seen_ttl, 5)),
                score_params=gossip_guard.score_params(),
                # py-libp2p's "adaptive" gossip rescales the heartbeat as if its default were 120 s: on a health
                # score that a join storm, a minute without deliveries or any scorer without positive scores
                # brings under 0.7, a 1 s heartbeat becomes 30-60 s (docs/libp2p-pitfalls.md, pitfall 9).
                adaptive_gossip_enabled=False,
            )
        else:
            self.router = FloodSub(protocols=[FLOODSUB_PROTOCOL])
        self.pubsub = gossip_guard.GuardedPubsub(
            host,
            self.router,
            strict_signing=True,
            seen_ttl=int(g.seen_ttl),
            max_inbound_rpc_size=g.max_message_size + 4096,
            **tune_pubsub.constructor_kwargs(),
        )
        tune_pubsub.after_construct(self.pubsub, g.seen_ttl)
        start_seqno_from_nanoseconds(self.pubsub)
        announce_late_subscriptions(self.pubsub)
        retry_negotiation_failures(self.pubsub)
        if isinstance(self.router, GossipSub):
            replay_only_own(self.router)
            set_lazy_degree(self.router, g.lazy_degree)
            graft_opportunistically_as_specified(self.router)
            back_off_pruned_peers(self.router)
        gossip_guard.install()
        self._handlers: dict[str, list[Handler]] = {}
        self._nursery: trio.Nursery | None = None
        self.push_tasks: PushSpawningManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator["Gossip"]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(background_trio_service(self.pubsub))
            if isinstance(self.router, GossipSub):
                await stack.enter_async_context(background_trio_service(self.router))
            await self.pubsub.wait_until_ready()
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            self.push_tasks = spawn_pushes_in(self.pubsub, self._nursery)
            try:
                yield self
            finally:
                self._nursery.cancel_scope.cancel()

    async def subscribe(self, topic: str, handler: Handler) -> None:
        """Subscribe and deliver every message's (sender, data) to ``handler``; several handlers per topic work."""
        if topic in self._handlers:
            self._handlers[topic].append(handler)
            return
        self._handlers[topic] = [handler]
        sub = await self.pubsub.subscribe(topic)
        count_overflow(self.pubsub, topic)
        assert self._nursery is not None, "subscribe() needs running()"
        self._nursery.start_soon(self._reader, topic, sub)

    async def _reader(self, topic: str, sub: Any) -> None:
        counter = metrics.MESSAGES_IN.labels(topic)
        while True:
            msg = await sub.get()
            counter.inc()
            try:
                sender = ID(msg.from_id)
            except Exception:
                metrics.MESSAGES_REJECTED.labels(topic, "bad-sender").inc()
                continue
            for handler in self._handlers[topic]:
                try:
                    result = handler(sender, msg.data)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("handler for topic %s failed on a message from %s", topic, sender)

    async def publish(self, topic: str, data: bytes) -> None:
        if len(data) > self.cfg.gossip.max_message_size:
            raise ValueError(f"message of {len(data)} bytes is over gossip.max_message_size "
                             f"({self.cfg.gossip.max_message_size})")
        await self.pubsub.publish(topic, data)
        metrics.MESSAGES_OUT.labels(topic).inc()
        # Pubsub.publish never yields; without this a publish loop starves every other task
        # (docs/libp2p-pitfalls.md, 2).
        await trio.lowlevel.checkpoint()

    def mesh_sizes(self) -> dict[str, int]:
        mesh = getattr(self.router, "mesh", None)
        if mesh is None:
            return {t: len(self.pubsub.peer_topics.get(t, ())) for t in self._handlers}
        return {t: len(mesh.get(t, ())) for t in self._handlers}

    def topic_peers(self, topic: str) -> int:
        return len(self.pubsub.peer_topics.get(topic, ()))


def refresh_signed_record(host: IHost) -> None:
    """Issue our new signed peer record now (after our addresses changed), and make pubsub send it from its next RPC
    on rather than its cached one (``pubsub_local_record`` re-checks addresses only every ``ADDRS_RECHECK_S``)."""
    from libp2p.peer.peerstore import env_to_send_in_RPC

    from p2p_fast.stack.patches.pubsub_local_record import expire_local_record

    env_to_send_in_RPC(host)  # the stock function: issues and caches the new record
    expire_local_record(host)
