"""Who is out there and what can they do: capability advertisements and heartbeats over gossip.

Every node publishes a ``CapabilityAdvertisement`` when it joins, whenever its peer set changes (debounced), and every
third heartbeat; a ``HeartBeat`` (load, free slots) every ``node.heartbeat_interval``. Receivers keep a
:class:`PeerBook`; a peer whose last message is older than three heartbeat intervals leaves the live view.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import trio
from libp2p.peer.id import ID

from .. import metrics
from .codec import DecodeError, decode, encode
from .messages import CapabilityAdvertisement, HeartBeat

log = logging.getLogger(__name__)
MISSED_HEARTBEATS_BEFORE_DEAD = 3


@dataclass
class PeerRecord:
    peer_id: str
    role: str = "?"
    capabilities: list[str] = field(default_factory=list)
    slots: int = 0
    free_slots: int = 0
    queue_depth: int = 0
    load: float = 0.0
    addrs: list[str] = field(default_factory=list)
    last_seen: float = 0.0
    seq: int = 0


class PeerBook:
    """The live view of the network learned from gossip. ``clock`` is injectable for tests."""

    def __init__(self, heartbeat_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self.records: dict[str, PeerRecord] = {}
        self.changed = trio.Event()
        # Called when a peer's role or capabilities become known or change (the node's "peer identified" event).
        self.on_identified: Callable[[PeerRecord], None] | None = None

    def _touch(self, peer_id: str) -> PeerRecord:
        rec = self.records.get(peer_id)
        if rec is None:
            rec = self.records[peer_id] = PeerRecord(peer_id)
        rec.last_seen = self.clock()
        return rec

    def on_advertisement(self, ad: CapabilityAdvertisement) -> None:
        rec = self._touch(ad.peer_id)
        changed = rec.role != ad.role or rec.capabilities != list(ad.capabilities)
        rec.role, rec.capabilities, rec.slots = ad.role, list(ad.capabilities), ad.slots
        rec.free_slots, rec.queue_depth, rec.load, rec.addrs, rec.seq = (
            ad.free_slots, ad.queue_depth, ad.load, list(ad.addrs), ad.seq)
        if changed and self.on_identified is not None:
            self.on_identified(rec)
        self._signal()

    def on_heartbeat(self, hb: HeartBeat) -> None:
        rec = self._touch(hb.peer_id)
        rec.free_slots, rec.queue_depth, rec.load = hb.free_slots, hb.queue_depth, hb.load
        self._signal()

    def _signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def is_live(self, rec: PeerRecord) -> bool:
        return self.clock() - rec.last_seen <= MISSED_HEARTBEATS_BEFORE_DEAD * self.heartbeat_interval

    def live(self) -> list[PeerRecord]:
        return [r for r in self.records.values() if self.is_live(r)]

    def get(self, peer_id: str) -> PeerRecord | None:
        return self.records.get(peer_id)

    def with_capability(self, capability: str) -> list[PeerRecord]:
        return [r for r in self.live() if capability in r.capabilities]

    def expire(self, keep_for: float = 3600.0) -> None:
        """Forget peers silent for ``keep_for`` seconds (bounded memory on a churning network)."""
        now = self.clock()
        for pid in [p for p, r in self.records.items() if now - r.last_seen > keep_for]:
            del self.records[pid]


class Presence:
    """Publishes our advertisements/heartbeats and feeds received ones into the :class:`PeerBook`."""

    def __init__(self, node: "object", book: PeerBook) -> None:
        self.node = node  # duck-typed: needs gossip, cfg, peer_id, advertisement(), heartbeat()
        self.book = book
        self.ads_topic = node.cfg.topic("capabilities")  # type: ignore[attr-defined]
        self.hb_topic = node.cfg.topic("heartbeat")  # type: ignore[attr-defined]
        self._wake = trio.Event()

    async def start(self) -> None:
        gossip = self.node.gossip  # type: ignore[attr-defined]
        await gossip.subscribe(self.ads_topic, self._on_ad)
        await gossip.subscribe(self.hb_topic, self._on_hb)

    def poke(self) -> None:
        """Ask for an advertisement soon (new peers joined): they would otherwise wait a full interval."""
        self._wake.set()

    def _accept(self, topic: str, kind: type, sender: ID, data: bytes) -> Any:
        """Decode a presence message; None (counted, logged) unless it is a ``kind`` describing its own sender.

        Gossip signatures prove ``sender``, so a peer cannot speak for another; our own messages come back to us
        through our subscription and are skipped."""
        try:
            msg = decode(data)
        except DecodeError as exc:
            metrics.MESSAGES_REJECTED.labels(topic, exc.reason).inc()
            log.warning("dropped %s message from %s: %s", topic, sender, exc)
            return None
        if not isinstance(msg, kind) or str(sender) != msg.peer_id:  # type: ignore[attr-defined]
            metrics.MESSAGES_REJECTED.labels(topic, "wrong-sender-or-type").inc()
            return None
        if sender == self.node.peer_id:  # type: ignore[attr-defined]
            return None
        return msg

    async def _on_ad(self, sender: ID, data: bytes) -> None:
        msg = self._accept(self.ads_topic, CapabilityAdvertisement, sender, data)
        if msg is not None:
            self.book.on_advertisement(msg)

    async def _on_hb(self, sender: ID, data: bytes) -> None:
        msg = self._accept(self.hb_topic, HeartBeat, sender, data)
        if msg is not None:
            self.book.on_heartbeat(msg)

    async def run(self) -> None:
        interval = self.node.cfg.node.heartbeat_interval  # type: ignore[attr-defined]
        gossip = self.node.gossip  # type: ignore[attr-defined]
        beats = 0
        while True:
            try:
                if beats % 3 == 0:
                    await gossip.publish(self.ads_topic, encode(self.node.advertisement()))  # type: ignore
                await gossip.publish(self.hb_topic, encode(self.node.heartbeat()))  # type: ignore
            except Exception as exc:  # no peers yet, or shutting down: try again next beat
                log.debug("presence publish failed: %s", exc)
            beats += 1
            self.book.expire()
            with trio.move_on_after(interval):
                await self._wake.wait()
                self._wake = trio.Event()
                await trio.sleep(0.3)  # debounce bursts of joins; mesh grafts settle
                beats = 0
