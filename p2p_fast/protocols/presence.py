"""Who is out there and what can they do, at a per-node cost that does not grow with the network.

Every advertisement reaches every node (GossipSub), so what bounds a node's presence load is how often each node
advertises. A node publishes a ``CapabilityAdvertisement`` on ``<protocol_version>/capabilities``:

- when it joins: once its topic has a peer, then again ``JOIN_RETRY_S`` later, the gap doubling, until it hears
  another node's advertisement through gossip (its mesh delivers; at most ``JOIN_RETRY_FOR``), then at once and
  ``JOIN_REPEATS`` later. In a join storm a node's first links can be stuck behind an overloaded peer for tens of
  seconds, and an advertisement published into a mesh that does not deliver yet is lost until the next refresh,
  minutes later; the gap doubles because every retry reaches every node that does hear it (twenty isolated nodes
  retrying every 3 s loaded the very network they waited for);
- when what it advertises changes (capabilities, addresses, full <-> has free slots), at most once per
  ``node.heartbeat_interval``;
- on a refresh every ``max(3 x node.heartbeat_interval, live network size / TARGET_RECEIVE_RATE)`` seconds, jittered
  down by up to a quarter so a join storm does not refresh in lock-step: each node then receives about
  ``TARGET_RECEIVE_RATE`` refreshes per second or fewer, whatever the size of the network;
- a goodbye (``ttl_s`` 0) when it stops, so peers drop it at once instead of at expiry.

Each advertisement carries ``ttl_s`` = ``MISSED_REFRESHES_BEFORE_DEAD`` x its nominal refresh interval; a receiver
keeps the sender live until then (the sender's figure, so nodes that estimate the network's size differently still
agree). Nodes no longer publish heartbeats (one per node per interval to every node was the O(N) part) nor subscribe
to them; an advertisement without a TTL (an older node) is live for the receiver's default, 3 x its heartbeat
interval, and older nodes advertise every third heartbeat.

A joining node would wait a whole refresh interval to learn the nodes already there, so it pulls the live view from
a connected peer over a stream (``presence-sync``), each pull from a peer not asked in this round. While pulls keep
adding records (the network is still growing) the next one comes ``SYNC_FIRST_GAP`` later, the gap doubling up to
the refresh interval (up to ``JOIN_SYNC_MAX_GAP`` in the node's first ``JOIN_SYNC_FOR`` seconds); a pull that adds
nothing sets the gap to the refresh interval, the steady state. On
``presence-sync/1.1.0`` the puller first sends its own advertisement (push-pull): the peer it asks learns it
first-hand over the authenticated stream, so a joining node is in the view of its first contact (often the
bootstrap) before its gossip reaches anyone. Pulled records carry their remaining TTL and are second-hand: they never
replace a live record heard from its node. The book holds at most ``MAX_RECORDS`` peers, and callers that pick peers
(task candidates) ask for a bounded sample. Message rates: docs/protocol.md, "Finding workers"; at 1,000-100,000 nodes: docs/scale.md.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

import trio
from libp2p.abc import IHost
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from p2p_fast.core import metrics
from p2p_fast._ext import FrameDecoder, encode_uvarint
from p2p_fast._ext import FrameError as ExtFrameError
from p2p_fast.protocols.codec import DecodeError, decode, encode
from p2p_fast.protocols.messages import CapabilityAdvertisement

if TYPE_CHECKING:
    from p2p_fast.stack.load_shed import Shedder
    from p2p_fast.stack.pubsub import Gossip

log = logging.getLogger(__name__)
MISSED_HEARTBEATS_BEFORE_DEAD = 3  # advertisements without a TTL (older nodes): 3 x the receiver's heartbeat interval
MISSED_REFRESHES_BEFORE_DEAD = 3
SHED_REFRESH_AT_MOST = 1.5  # x the nominal refresh interval: the longest a node under CPU pressure stays silent
TARGET_RECEIVE_RATE = 0.5  # refresh advertisements a node receives per second from the whole network, at most
JOIN_RETRY_S = 3.0  # the first gap between join retries (doubling) until another node's advertisement arrives
JOIN_RETRY_FOR = 60.0  # then give up confirming and go on with the repeats (a lone node hears nobody)
JOIN_REPEATS = (2.0, 10.0, 30.0)  # seconds after the mesh delivered, repeated while meshes form
SYNC_FIRST_GAP = 5.0  # seconds between the first pulls while they add records; doubles up to the refresh interval
JOIN_SYNC_FOR = 180.0  # seconds after start in which pulls that add records come at least every JOIN_SYNC_MAX_GAP
JOIN_SYNC_MAX_GAP = 20.0  # seconds: the longest gap between such pulls (next_sync_gap)
MAX_PUSH_BYTES = 64 * 1024  # the puller's own advertisement on presence-sync/1.1.0
PUSH_READ_TIMEOUT = 5.0
MAX_RECORDS = 5000
MAX_SYNC_RECORDS = 2000
MAX_SYNC_BYTES = 2 * 1024 * 1024
MAX_TTL_S = 7 * 86400.0
SAMPLE_ROTATE_S = 60.0
CLOCK_SAMPLES = 8  # advertisement timestamps kept per peer for its clock offset (the smallest counts)


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
    expires_at: float = 0.0
    hearsay: bool = False  # learned from another peer's view, not from the node itself
    # Our wall clock minus the peer's ``sent_at`` in its last advertisement, in seconds: the clock skew plus the
    # gossip delivery time (milliseconds on a LAN). None until an advertisement with a timestamp came.
    # `p2p-node doctor` reports it.
    clock_offset: float | None = None
    clock_samples: deque[float] = field(default_factory=lambda: deque(maxlen=CLOCK_SAMPLES))


class PeerBook:
    """The live view of the network. ``clock`` is injectable for tests."""

    def __init__(self, heartbeat_interval: float, clock: Callable[[], float] = time.monotonic,
                 max_records: int = MAX_RECORDS) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.default_ttl = MISSED_HEARTBEATS_BEFORE_DEAD * heartbeat_interval
        self.clock = clock
        self.max_records = max_records
        self.records: dict[str, PeerRecord] = {}
        self.changed = trio.Event()
        # Called when a peer's role or capabilities become known or change (the node's "peer identified" event).
        self.on_identified: Callable[[PeerRecord], None] | None = None

    def _slot(self, peer_id: str) -> PeerRecord:
        rec = self.records.get(peer_id)
        if rec is None:
            if len(self.records) >= self.max_records:
                self._evict()
            rec = self.records[peer_id] = PeerRecord(peer_id)
        return rec

    def _evict(self) -> None:
        """Make room: the dead first, else the record closest to expiry."""
        now = self.clock()
        dead = [p for p, r in self.records.items() if r.expires_at < now]
        for pid in dead:
            del self.records[pid]
        if len(self.records) >= self.max_records:
            del self.records[min(self.records.values(), key=lambda r: r.expires_at).peer_id]

    def _fill(self, rec: PeerRecord, ad: CapabilityAdvertisement) -> None:
        changed = rec.role != ad.role or rec.capabilities != list(ad.capabilities)
        rec.role, rec.capabilities, rec.slots = ad.role, list(ad.capabilities), ad.slots
        rec.free_slots, rec.queue_depth, rec.load, rec.addrs, rec.seq = (
            ad.free_slots, ad.queue_depth, ad.load, list(ad.addrs), ad.seq)
        if changed and self.on_identified is not None:  # first-hand or pulled: the peer's role is known now
            self.on_identified(rec)

    @staticmethod
    def _note_clock(rec: PeerRecord, ad: CapabilityAdvertisement) -> None:
        """Our clock minus the sender's ``sent_at``: skew plus delivery delay, and the delay is never negative, so the
        smallest of the last few samples is the best estimate of the skew. A late delivery (a GossipSub replay to a
        reconnected peer, an IWANT answer) then does not read as a clock tens of seconds off."""
        if ad.sent_at is None or not math.isfinite(ad.sent_at):
            return
        rec.clock_samples.append(time.time() - ad.sent_at)
        rec.clock_offset = min(rec.clock_samples)

    def _ttl(self, ad: CapabilityAdvertisement) -> float:
        if ad.ttl_s is None or not math.isfinite(ad.ttl_s) or ad.ttl_s < 0:
            return self.default_ttl
        return min(ad.ttl_s, MAX_TTL_S)

    def on_advertisement(self, ad: CapabilityAdvertisement) -> None:
        """An advertisement from the node itself (gossip signatures prove the sender)."""
        if ad.ttl_s == 0:
            self.forget(ad.peer_id)
            return
        rec = self._slot(ad.peer_id)
        self._note_clock(rec, ad)
        self._fill(rec, ad)
        rec.last_seen = self.clock()
        rec.expires_at = rec.last_seen + self._ttl(ad)
        rec.hearsay = False
        self._signal()

    def on_synced(self, ad: CapabilityAdvertisement) -> bool:
        """A record from another peer's view (``ttl_s`` = its time left): taken unless we know better first-hand."""
        ttl = self._ttl(ad)
        if ad.ttl_s is None or ttl <= 0:
            return False
        rec = self.records.get(ad.peer_id)
        now = self.clock()
        if rec is not None and (not rec.hearsay and rec.expires_at >= now or rec.expires_at >= now + ttl):
            return False
        rec = self._slot(ad.peer_id)
        self._fill(rec, ad)
        rec.last_seen, rec.expires_at, rec.hearsay = now, now + ttl, True
        self._signal()
        return True

    def forget(self, peer_id: str) -> None:
        if self.records.pop(peer_id, None) is not None:
            self._signal()

    def _signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def is_live(self, rec: PeerRecord) -> bool:
        return self.clock() <= rec.expires_at

    def live(self) -> list[PeerRecord]:
        now = self.clock()
        return [r for r in self.records.values() if now <= r.expires_at]

    def network_size(self) -> int:
        """Live peers plus this node: the size estimate the refresh interval scales with."""
        return len(self.live()) + 1

    def get(self, peer_id: str) -> PeerRecord | None:
        return self.records.get(peer_id)

    def with_capability(self, capability: str, limit: int | None = None) -> list[PeerRecord]:
        """Live peers offering ``capability``; with ``limit``, a sample of at most that many that changes every
        ``SAMPLE_ROTATE_S`` (stable in between, so task links get reused; different on every node)."""
        recs = [r for r in self.live() if capability in r.capabilities]
        if limit is None or len(recs) <= limit:
            return recs
        salt = int(self.clock() // SAMPLE_ROTATE_S)
        return sorted(recs, key=lambda r: hash((salt, r.peer_id)))[:limit]

    def expire(self, keep_for: float = 3600.0) -> None:
        """Forget peers dead and silent for ``keep_for`` seconds (their addresses help redial until then)."""
        now = self.clock()
        for pid in [p for p, r in self.records.items() if now > r.expires_at and now - r.last_seen > keep_for]:
            del self.records[pid]

    def snapshot(self, limit: int = MAX_SYNC_RECORDS) -> list[CapabilityAdvertisement]:
        """The live view as advertisements whose ``ttl_s`` is each record's time left (what ``presence-sync``
        serves)."""
        now = self.clock()
        out = []
        for r in self.live()[:limit]:
            out.append(CapabilityAdvertisement(
                peer_id=r.peer_id, role=r.role, capabilities=list(r.capabilities), slots=r.slots,
                free_slots=r.free_slots, queue_depth=r.queue_depth, load=r.load, addrs=list(r.addrs), seq=r.seq,
                ttl_s=max(r.expires_at - now, 0.001)))
        return out


def refresh_interval(heartbeat_interval: float, network_size: int) -> float:
    """Nominal seconds between a node's refresh advertisements (module doc)."""
    return max(MISSED_HEARTBEATS_BEFORE_DEAD * heartbeat_interval, network_size / TARGET_RECEIVE_RATE)


def may_skip_refresh(now: float, last_publish: float, nominal: float) -> bool:
    """Whether a node under CPU pressure may skip a due refresh: only while its last advertisement is younger than
    ``SHED_REFRESH_AT_MOST`` x the nominal interval, so that every receiver hears from it within the TTL it gave
    (``MISSED_REFRESHES_BEFORE_DEAD`` x nominal). Shedding alone decided before, and in a 100-node join storm on 2
    cores nodes shed for two minutes and more: their records expired in the others' views, which then took minutes
    to hold every worker."""
    return now - last_publish < SHED_REFRESH_AT_MOST * nominal


async def _read_or_eof(stream: Any, n: int) -> bytes:
    """``stream.read``, with the end of the stream as ``b""``: py-libp2p raises ``StreamEOF`` there, and a pull
    that ended that way was taken for a failed one (its records were kept but the pull counted as failed)."""
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


def next_sync_gap(gap: float, added: int, refresh: float, failed: bool = False, joining: bool = False) -> float:
    """Seconds from a pull to the next: short and doubling while pulls add records (a growing network) or fail (a
    timed-out pull must not read as a complete view: a joining worker whose first pull, from a loaded bootstrap,
    timed out then waited a whole refresh interval), the refresh interval once one succeeds adding nothing.

    ``joining`` (the node's first ``JOIN_SYNC_FOR`` seconds, and the pull brought peers not live in our view):
    pulls that add records come at most ``JOIN_SYNC_MAX_GAP`` apart. In a join storm the last joiners' advertisements miss some views and some joiners'
    first pulls come from peers whose views are still filling; with the gap doubling to 40 and 80 s, the 100-node
    benchmark's views converged 90-130 s after the first start, each tail closed by a pull. Bounded per session:
    after it, a pull still adding records (churn in a large network) doubles up to the refresh interval, so a node
    does not pull the whole view every 20 s for ever."""
    if not (added or failed):
        return refresh
    nxt = min(max(2 * gap, SYNC_FIRST_GAP), refresh)
    return min(nxt, JOIN_SYNC_MAX_GAP) if joining and added and not failed else nxt


class JoinSchedule:
    """When a joining node advertises (module doc): once its topic has a peer; then after ``JOIN_RETRY_S``, 2 x, 4 x
    ... that, until gossip brings it another node's advertisement (proof that its mesh delivers) or
    ``JOIN_RETRY_FOR`` passed; then at once and ``JOIN_REPEATS`` later."""

    def __init__(self) -> None:
        self.joined_at: float | None = None
        self.confirmed_at: float | None = None
        self._repeats = list(JOIN_REPEATS)
        self._retry_gap = JOIN_RETRY_S

    def due(self, now: float, topic_has_peer: bool, heard_others: bool, last_publish: float) -> bool:
        if self.joined_at is None:
            if topic_has_peer:
                self.joined_at = now
                return True
            return False
        if self.confirmed_at is None:
            if heard_others or now - self.joined_at >= JOIN_RETRY_FOR:
                self.confirmed_at = now
                return True
            if now - last_publish >= self._retry_gap:
                self._retry_gap *= 2
                return True
            return False
        if self._repeats and now >= self.confirmed_at + self._repeats[0]:
            self._repeats.pop(0)
            return True
        return False


class AdvertisementSource(Protocol):
    """What presence needs from the node it speaks for (the application implements it)."""

    def advertisement(self) -> CapabilityAdvertisement:
        """Our advertisement as of now (a new ``seq`` each call)."""

    def presence_signature(self) -> Hashable:
        """What, when it changes, makes an advertisement due before the next refresh (load alone does not)."""


class Presence:
    """Publishes our advertisements, serves and pulls the live view, and feeds what it hears into the book.

    It gets what it uses: the host (sync streams, connected peers), the gossip layer (the advertisement topic),
    the book it fills, the source of our own advertisement, the topic and protocol names of this network, and the
    load shedder that may skip a refresh."""

    def __init__(self, host: IHost, gossip: Gossip, book: PeerBook, source: AdvertisementSource, *, ads_topic: str,
                 sync_protocols: tuple[str, str], heartbeat_interval: float, sync_timeout: float,
                 shedder: Shedder | None = None) -> None:
        """``sync_protocols``: the push-pull id (``presence-sync/1.1.0``) and the pull-only one (``1.0.0``)."""
        self.host = host
        self.gossip = gossip
        self.book = book
        self.source = source
        self.shedder = shedder
        self.ads_topic = ads_topic
        self.sync_push_protocol, self.sync_protocol = sync_protocols
        self.heartbeat_interval = heartbeat_interval
        self.sync_timeout = sync_timeout
        self._wake = trio.Event()
        self._last_signature: Any = None
        self._last_publish = -math.inf
        self._last_sync = -math.inf
        self._asked: set[ID] = set()
        self._sync_gap = 0.0  # seconds from the last pull to the next one (module doc)
        self._started = -math.inf  # when run() began: the first JOIN_SYNC_FOR seconds pull more often
        self._sync_failures = 0  # in a row
        self.heard = 0  # advertisements from other nodes received by gossip: our mesh delivers
        self.published = 0
        self.synced = 0
        self.pushed_in = 0  # pullers' own advertisements taken first-hand (presence-sync/1.1.0)
        self.pulled_new = 0  # pulled records of peers that were not live in our view (not mere TTL extensions)

    async def start(self) -> None:
        await self.gossip.subscribe(self.ads_topic, self._on_ad)
        self.serve_sync()

    def serve_sync(self) -> None:
        """Answer pulls of the live view, both versions."""
        self.host.set_stream_handler(self.sync_protocol, self._serve_sync)
        self.host.set_stream_handler(self.sync_push_protocol, self._serve_push_sync)

    def poke(self) -> None:
        """New direct peers: look at once whether to pull the live view from one of them."""
        self._wake.set()

    def refresh_interval(self) -> float:
        return refresh_interval(self.heartbeat_interval, self.book.network_size())

    # -- receiving --------------------------------------------------------------------------------------------------
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
        if sender == self.host.get_id():
            return None
        return msg

    async def _on_ad(self, sender: ID, data: bytes) -> None:
        msg = self._accept(self.ads_topic, CapabilityAdvertisement, sender, data)
        if msg is not None:
            self.heard += 1
            self.book.on_advertisement(msg)

    # -- publishing -------------------------------------------------------------------------------------------------
    def _own_ad(self, ttl_s: float) -> CapabilityAdvertisement:
        ad = self.source.advertisement()
        ad.ttl_s = ttl_s
        ad.sent_at = time.time()
        return ad

    async def _publish(self, ttl_s: float) -> None:
        ad = self._own_ad(ttl_s)
        try:
            await self.gossip.publish(self.ads_topic, encode(ad))
            self.published += 1
        except Exception as exc:  # no peers yet, or shutting down: the next due advertisement tries again
            log.debug("presence publish failed: %s", exc)
        self._last_publish = trio.current_time()

    async def goodbye(self) -> None:
        """Tell the network we leave (``ttl_s`` 0), so peers drop us now rather than at expiry."""
        if self.published:
            await self._publish(0.0)

    async def run(self) -> None:
        tick = min(1.0, self.heartbeat_interval)
        join = JoinSchedule()
        self._started = trio.current_time()
        next_refresh = math.inf
        while True:
            now = trio.current_time()
            due = join.due(now, self.gossip.topic_peers(self.ads_topic) > 0, self.heard > 0, self._last_publish)
            joined_at = join.joined_at
            if now >= next_refresh:
                if not may_skip_refresh(now, self._last_publish, self.refresh_interval()) or self.shedder is None \
                        or self.shedder.allow("advert-refresh"):
                    due = True
                else:  # the TTL covers three refreshes: one skipped costs nothing
                    next_refresh = now + self.refresh_interval() / 4
            signature = self.source.presence_signature()
            if joined_at is not None and signature != self._last_signature \
                    and now - self._last_publish >= self.heartbeat_interval:
                due = True
            if due:
                nominal = self.refresh_interval()
                self._last_signature = signature
                await self._publish(MISSED_REFRESHES_BEFORE_DEAD * nominal)
                next_refresh = now + nominal * random.uniform(0.75, 1.0)
            await self._maybe_sync(now)
            self.book.expire()
            with trio.move_on_after(tick):
                await self._wake.wait()
            self._wake = trio.Event()

    # -- the live view over a stream ----------------------------------------------------------------------------------
    async def _maybe_sync(self, now: float) -> None:
        if now - self._last_sync < min(self._sync_gap, self.refresh_interval()):
            return
        connected = self.host.get_connected_peers()
        peers = [p for p in connected if p not in self._asked]
        if not peers:  # every peer asked once: a new round
            self._asked.clear()
            peers = connected
        if not peers:
            return
        peer = random.choice(peers)
        self._asked.add(peer)
        self._last_sync = now
        added = 0
        new_before = self.pulled_new
        failed: str | None = None
        with trio.move_on_after(min(10.0, self.sync_timeout)) as scope:
            try:
                added = await self.pull(peer)
            except Exception as exc:  # a peer without the protocol, or gone
                failed = f"{type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            failed = "no answer in time"
        if failed is not None:
            log.debug("presence sync from %s failed: %s", peer, failed)
            self._sync_failures += 1
            untried = any(p not in self._asked for p in self.host.get_connected_peers())
            if self._sync_failures < 3 and untried:  # at once, from another peer
                self._last_sync = -math.inf
            else:  # not at once again: a pull its server was too slow for still cost the server the whole answer
                self._sync_gap = next_sync_gap(self._sync_gap, added, self.refresh_interval(), failed=True)
            return
        self._sync_failures = 0
        self.synced += added
        # "Joining": young, and this pull brought peers we did not know live (a growing network, or our view's
        # gap), not only fresher TTLs of second-hand records (which every pull of a settled network brings).
        joining = now - self._started < JOIN_SYNC_FOR and self.pulled_new > new_before
        self._sync_gap = next_sync_gap(self._sync_gap, added, self.refresh_interval(), joining=joining)

    async def pull(self, peer: ID) -> int:
        """Ask ``peer`` for its live view (sending ours first where it speaks push-pull); returns how many records
        it added to ours."""
        stream = await self.host.new_stream(peer, [self.sync_push_protocol, self.sync_protocol])
        decoder = FrameDecoder(64 * 1024)
        added = total = 0
        own = str(self.host.get_id())
        try:
            if stream.get_protocol() == self.sync_push_protocol:
                body = encode(self._own_ad(MISSED_REFRESHES_BEFORE_DEAD * self.refresh_interval()))
                await stream.write(encode_uvarint(len(body)) + body)
            while total < MAX_SYNC_BYTES:
                chunk = await _read_or_eof(stream, 64 * 1024)
                if not chunk:
                    break
                total += len(chunk)
                try:
                    frames = decoder.feed(chunk)
                except ExtFrameError as exc:
                    log.warning("presence sync from %s: bad framing (%s)", peer, exc)
                    break
                for frame in frames:
                    try:
                        msg = decode(frame)
                    except DecodeError as exc:
                        metrics.MESSAGES_REJECTED.labels(self.sync_protocol, exc.reason).inc()
                        continue
                    if isinstance(msg, CapabilityAdvertisement) and msg.peer_id != own:
                        known = self.book.get(msg.peer_id)
                        was_live = known is not None and self.book.is_live(known)
                        if self.book.on_synced(msg):
                            added += 1
                            self.pulled_new += not was_live
        finally:
            await stream.close()
        return added

    async def _serve_push_sync(self, stream: Any) -> None:
        """Push-pull: the puller's own advertisement first (one frame), then our view as on 1.0.0."""
        try:
            with trio.move_on_after(PUSH_READ_TIMEOUT):
                ad = await self._read_pushed(stream)
                if ad is not None:
                    self.pushed_in += 1
                    self.book.on_advertisement(ad)
        except Exception:
            await stream.reset()
            raise
        await self._serve_sync(stream)

    async def _read_pushed(self, stream: Any) -> CapabilityAdvertisement | None:
        """The one frame a puller sends: its advertisement, describing the peer at the other end of the
        authenticated stream (anything else is dropped, counted and logged)."""
        decoder = FrameDecoder(MAX_PUSH_BYTES)
        frames: list[bytes] = []
        while not frames:
            chunk = await _read_or_eof(stream, MAX_PUSH_BYTES)
            if not chunk:
                return None
            try:
                frames = decoder.feed(chunk)
            except ExtFrameError as exc:
                metrics.MESSAGES_REJECTED.labels(self.sync_push_protocol, "framing").inc()
                log.warning("presence sync: bad framing from %s (%s)", stream.muxed_conn.peer_id, exc)
                return None
        remote = str(stream.muxed_conn.peer_id)
        try:
            msg = decode(frames[0])
        except DecodeError as exc:
            metrics.MESSAGES_REJECTED.labels(self.sync_push_protocol, exc.reason).inc()
            log.warning("presence sync: dropped the advertisement pushed by %s: %s", remote, exc)
            return None
        if not isinstance(msg, CapabilityAdvertisement) or msg.peer_id != remote:
            metrics.MESSAGES_REJECTED.labels(self.sync_push_protocol, "wrong-sender-or-type").inc()
            log.warning("presence sync: %s pushed something other than its own advertisement", remote)
            return None
        return msg

    async def _serve_sync(self, stream: Any) -> None:
        try:
            ads = [self.source.advertisement()]
            ads[0].ttl_s = MISSED_REFRESHES_BEFORE_DEAD * self.refresh_interval()
            ads += self.book.snapshot()
            out = bytearray()
            for ad in ads:
                body = encode(ad)
                out += encode_uvarint(len(body))
                out += body
            await stream.write(bytes(out))
        finally:
            await stream.close()
