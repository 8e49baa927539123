"""GossipSub's heartbeat skips its per-peer work while the node is idle, and runs py-libp2p's mesh-quality
replacement every ``MESH_QUALITY_TICKS`` heartbeats instead of every one (process-wide: :func:`apply` /
:func:`revert`).

Upstream: ``libp2p/pubsub/gossipsub.py``, ``GossipSub.heartbeat`` (py-libp2p 0.8.1) -- a limit, no upstream issue
found. Every heartbeat (``gossip.heartbeat_interval``, 1 s) walks every peer of every topic several times, whether
or not anything happened: ``mesh_heartbeat`` scores each topic peer, ``PeerScorer.on_heartbeat`` decays every
counter of every peer, ``_maintain_mesh_quality`` scores the mesh and every other topic peer and swaps the worst for
the best (a PRUNE and a GRAFT, each answered by the peer), plus IHAVE selection and security clean-ups. In an idle
node with 30 peers that was half of its CPU (bench/RESULTS.md, "Idle cost per connection: profiles"), a cost per
peer per second that made a full mesh O(N^2). go-libp2p does opportunistic grafting only every 60 heartbeats
(``GossipSubOpportunisticGraftTicks``); py-libp2p's replacement runs on every one and, on idle first-delivery
scores, swaps mesh peers back and forth.

The patched heartbeat runs the stock steps, in the stock order, with two changes:

1. **Idle heartbeats are skipped.** After a heartbeat that changed nothing -- no GRAFT, PRUNE or IHAVE to send, the
   message cache empty, no fanout topic, every mesh at least ``min(degree_low, peers in the topic)`` -- the next
   ones only compare a signature of the state (each topic's mesh members, how many peers the topic has, how many
   pubsub peers) with the one after that heartbeat: O(topics + mesh), not O(peers). Anything that would give the
   heartbeat work changes the signature or fills the message cache (a message, a peer or subscription coming or
   going, a GRAFT or PRUNE received), and then the full heartbeat runs on that tick, as stock. At least every
   ``IDLE_FULL_EVERY`` ticks it runs anyway (time-based expiries: back-offs, security clean-ups).
2. **Score decay is not lost**: a full heartbeat after ``k - 1`` skipped ones decays every counter by ``decay ** k``
   (one ``on_heartbeat`` with the parameters raised to the ``k``-th power), so the counters are the stock ones at
   every full heartbeat; in between they lag by at most ``IDLE_FULL_EVERY - 1`` decay steps.
3. **Mesh-quality replacement every ``MESH_QUALITY_TICKS`` heartbeats** (go-libp2p's opportunistic-graft period).

``tests/node/test_gossip_idle.py`` shows stock against patched: the per-peer work of idle heartbeats, and
the same mesh repair when a peer leaves.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import trio
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams

IDLE_FULL_EVERY = 10  # ticks: a full heartbeat at least this often while idle
MESH_QUALITY_TICKS = 60  # ticks between py-libp2p's mesh-quality replacements (go-libp2p: opportunistic grafting)
STOCK_HEARTBEAT = GossipSub.heartbeat


def _powered(params: ScoreParams, k: int) -> ScoreParams:
    """``params`` with every decay factor raised to the ``k``-th power: one decay step worth ``k`` of them."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if isinstance(value, TopicScoreParams):
            changes[f.name] = dataclasses.replace(value, decay=value.decay ** k)
        elif f.name.endswith("_decay") and isinstance(value, float):
            changes[f.name] = value ** k
    return dataclasses.replace(params, **changes)


def decay(scorer: Any, k: int) -> None:
    """``k`` decay steps of ``scorer`` in one pass over its counters."""
    if k <= 1:
        scorer.on_heartbeat()
        return
    stock = scorer.params
    scorer.params = _powered(stock, k)
    try:
        scorer.on_heartbeat()
    finally:
        scorer.params = stock


class IdleState:
    """Decides, tick by tick, whether a router's heartbeat has anything to do (see the module doc)."""

    def __init__(self) -> None:
        self.tick = 0
        self.owed = 0  # decay steps skipped since the last full heartbeat
        self.quiet_signature: Any = None  # the state after a full heartbeat that changed nothing
        self.full_runs = 0
        self.skipped = 0
        self.quality_tick = 0  # the tick of the last mesh-quality pass

    @staticmethod
    def signature(router: Any) -> Any:
        pubsub = router.pubsub
        topics = getattr(pubsub, "peer_topics", {}) if pubsub is not None else {}
        return (len(getattr(pubsub, "peers", ()) or ()),
                tuple(sorted((t, frozenset(m), len(topics.get(t, ()))) for t, m in router.mesh.items())))

    def skip(self, router: Any) -> bool:
        """Count a tick; True if its heartbeat may be skipped."""
        self.tick += 1
        if self.quiet_signature is None or self.owed + 1 >= IDLE_FULL_EVERY:
            return False
        if self.signature(router) != self.quiet_signature or _mcache_busy(router):
            return False
        self.owed += 1
        self.skipped += 1
        return True

    def mesh_quality_due(self) -> bool:
        if self.tick - self.quality_tick < MESH_QUALITY_TICKS:
            return False
        self.quality_tick = self.tick
        return True

    def after_full(self, router: Any, emitted: bool) -> None:
        self.owed = 0
        self.full_runs += 1
        quiet = not emitted and not router.fanout and not _mcache_busy(router) and _meshes_filled(router)
        self.quiet_signature = self.signature(router) if quiet else None


def _mcache_busy(router: Any) -> bool:
    history = getattr(getattr(router, "mcache", None), "history", None)
    return history is None or any(history)


def _meshes_filled(router: Any) -> bool:
    topics = router.pubsub.peer_topics if router.pubsub is not None else {}
    return all(len(mesh) >= min(router.degree_low, len(topics.get(t, ()))) for t, mesh in router.mesh.items())


def _anything(control: Any) -> bool:
    return any(bool(v) for v in control.values())


async def idle_aware_heartbeat(self: Any) -> None:
    """``GossipSub.heartbeat`` with idle ticks skipped (see the module doc); the stock steps in the stock order."""
    await trio.sleep(self.heartbeat_initial_delay)
    state = self.__dict__.setdefault("_p2p_fast_idle", IdleState())
    while True:
        if state.skip(self):
            await trio.sleep(self.heartbeat_interval)
            continue
        steps = state.owed + 1
        peers_to_graft, peers_to_prune = self.mesh_heartbeat()
        if self.eclipse_protection_enabled:
            for topic in self.mesh:
                for peer in self._ensure_mesh_diversity(topic):
                    if peer not in peers_to_graft:
                        peers_to_graft[peer] = []
                    if topic not in peers_to_graft[peer]:
                        peers_to_graft[peer].append(topic)
        self.fanout_heartbeat()
        peers_to_gossip = self.gossip_heartbeat()
        emitted = _anything(peers_to_graft) or _anything(peers_to_prune) or any(
            _anything(per_topic) for per_topic in peers_to_gossip.values())
        await self._emit_control_msgs(peers_to_graft, peers_to_prune, peers_to_gossip)
        self.mcache.shift()
        if self.scorer is not None:
            decay(self.scorer, steps)
        if self.adaptive_gossip_enabled:
            self._update_network_health()
            self._adapt_gossip_parameters()
        self._periodic_security_cleanup()
        if state.mesh_quality_due():
            before = {t: frozenset(m) for t, m in self.mesh.items()}
            for topic in list(self.mesh):
                await self._maintain_mesh_quality(topic)
            emitted = emitted or before != {t: frozenset(m) for t, m in self.mesh.items()}
        self._prune_idontwant_entries()
        state.after_full(self, emitted)
        await trio.sleep(self.heartbeat_interval)


def apply() -> None:
    """Every GossipSub router of the process heartbeats idle-aware from its next start (idempotent).
    ``P2P_FAST_GOSSIP_IDLE=0`` leaves the stock heartbeat (for side-by-side measurements, bench/scale)."""
    if os.environ.get("P2P_FAST_GOSSIP_IDLE", "1") == "0":
        return
    GossipSub.heartbeat = idle_aware_heartbeat  # type: ignore[method-assign]


def revert() -> None:
    """Stock heartbeat for routers started from now on."""
    GossipSub.heartbeat = STOCK_HEARTBEAT  # type: ignore[method-assign]


def is_applied() -> bool:
    return GossipSub.heartbeat is idle_aware_heartbeat


def stats(router: Any) -> dict[str, int]:
    """Full and skipped heartbeats of one router so far (for tests and benchmarks)."""
    state = router.__dict__.get("_p2p_fast_idle")
    if state is None:
        return {"full": 0, "skipped": 0}
    return {"full": state.full_runs, "skipped": state.skipped}
