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

The patched heartbeat runs the stock steps, in the stock order, with three changes:

1. **The per-peer mesh walk is skipped while nothing changed.** After a walk (``mesh_heartbeat``, eclipse
   diversity, score decay, adaptive degrees, security clean-up) that changed nothing -- no GRAFT or PRUNE to send,
   every mesh at least ``min(degree_low, peers in the topic)`` -- the next ticks only compare a signature of the
   state (each topic's mesh members, how many peers the topic has, how many pubsub peers): O(topics + mesh), not
   O(peers). A peer or subscription coming or going, or a GRAFT or PRUNE received, changes the signature, and the
   walk runs on that tick, as stock. At least every ``IDLE_FULL_EVERY`` ticks it runs anyway (time-based expiries:
   back-offs, security clean-ups; a mesh peer whose score fell below zero is pruned at most that late). Message
   traffic does not force the walk: fanout upkeep, IHAVE gossip (when the message cache holds ids), the message
   cache shift and the IDONTWANT reset run on every tick as stock; with an empty message cache there is no gossip to
   select peers for.
2. **Score decay is not lost**: a walk after ``k - 1`` skipped ones decays every counter by ``decay ** k``
   (one ``on_heartbeat`` with the parameters raised to the ``k``-th power), so the counters are the stock ones at
   every walk; in between they lag by at most ``IDLE_FULL_EVERY - 1`` decay steps.
3. **Mesh-quality replacement every ``MESH_QUALITY_TICKS`` heartbeats** (go-libp2p's opportunistic-graft period).

``tests/node/test_gossip_idle.py`` shows stock against patched: the per-peer work of idle heartbeats, and
the same mesh repair when a peer leaves.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
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
    """Decides, tick by tick, whether a router's mesh walk has anything to do (see the module doc)."""

    def __init__(self) -> None:
        self.tick = 0
        self.owed = 0  # decay steps skipped since the last mesh walk
        self.quiet_signature: Any = None  # the state after a mesh walk that changed nothing
        self.full_runs = 0
        self.skipped = 0
        self.quality_tick = 0  # the tick of the last mesh-quality pass

    @staticmethod
    def signature(router: Any) -> Any:
        pubsub = router.pubsub
        topics = getattr(pubsub, "peer_topics", {}) if pubsub is not None else {}
        return (len(getattr(pubsub, "peers", ()) or ()),
                tuple(sorted((t, frozenset(m), len(topics.get(t, ()))) for t, m in router.mesh.items())))

    def mesh_walk_due(self, router: Any) -> bool:
        """Count a tick; False if its mesh walk (and decay) may be skipped."""
        self.tick += 1
        if self.quiet_signature is None or self.owed + 1 >= IDLE_FULL_EVERY \
                or self.signature(router) != self.quiet_signature:
            return True
        self.owed += 1
        self.skipped += 1
        return False

    def mesh_quality_due(self) -> bool:
        if self.tick - self.quality_tick < MESH_QUALITY_TICKS:
            return False
        self.quality_tick = self.tick
        return True

    def after_walk(self, router: Any, changed: bool) -> None:
        self.owed = 0
        self.full_runs += 1
        quiet = not changed and _meshes_filled(router)
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
    """``GossipSub.heartbeat`` with the per-peer mesh walk skipped while nothing changed (see the module doc); the
    stock steps in the stock order."""
    await trio.sleep(self.heartbeat_initial_delay)
    state = self.__dict__.setdefault("_p2p_fast_idle", IdleState())
    while True:
        walk = state.mesh_walk_due(self)
        steps = state.owed + 1
        if walk:
            peers_to_graft, peers_to_prune = self.mesh_heartbeat()
            if self.eclipse_protection_enabled:
                for topic in self.mesh:
                    for peer in self._ensure_mesh_diversity(topic):
                        if peer not in peers_to_graft:
                            peers_to_graft[peer] = []
                        if topic not in peers_to_graft[peer]:
                            peers_to_graft[peer].append(topic)
        else:
            peers_to_graft, peers_to_prune = defaultdict(list), defaultdict(list)
        busy = _mcache_busy(self)
        self.fanout_heartbeat()
        # With no message ids in the cache, gossip_heartbeat selects peers for nothing: it would return no IHAVE.
        peers_to_gossip = self.gossip_heartbeat() if busy or self.fanout else defaultdict(dict)
        changed = _anything(peers_to_graft) or _anything(peers_to_prune)
        await self._emit_control_msgs(peers_to_graft, peers_to_prune, peers_to_gossip)
        self.mcache.shift()
        if walk:
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
                changed = changed or before != {t: frozenset(m) for t, m in self.mesh.items()}
        if walk or busy:
            self._prune_idontwant_entries()
        if walk:
            state.after_walk(self, changed)
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
