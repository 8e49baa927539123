"""The message codec's error reasons and the live view's rules (TTLs, second-hand records, bounds)."""

from __future__ import annotations

import math

import pytest

from p2p_fast.protocols.codec import CODEC_VERSION, DecodeError, decode, encode
from p2p_fast.protocols.messages import CapabilityAdvertisement, GossipText, TaskReceipt, TaskRequest
from p2p_fast.protocols.presence import TARGET_RECEIVE_RATE, PeerBook, refresh_interval


def _ad(peer: str = "p1", caps=("compute",), ttl: float | None = None) -> CapabilityAdvertisement:
    return CapabilityAdvertisement(peer_id=peer, role="worker", capabilities=list(caps), slots=2, free_slots=1,
                                   queue_depth=0, load=0.5, addrs=["/ip4/127.0.0.1/tcp/1"], seq=7, ttl_s=ttl)


def test_round_trip_every_message_kind():
    for msg in (_ad(), _ad(ttl=270.0), _ad(ttl=0.0), GossipText("p1", "héllo", 1.0),
                TaskRequest("t1", "echo", b"\x00\xff", "s", 2**64 - 1, 0, float("inf"), 3, -1.5)):
        assert decode(encode(msg)) == msg


@pytest.mark.parametrize("data, reason", [
    (b"", "truncated"),
    (b"\x01", "truncated"),
    (bytes([CODEC_VERSION + 1, 1]), "bad-version"),
    (bytes([1, 5]) + encode(GossipText("p", "t", 1.0))[2:], "bad-version"),  # the format before protobuf
    (bytes([CODEC_VERSION, 250]), "unknown-type"),
    (bytes([CODEC_VERSION, 2]), "unknown-type"),  # HeartBeat, retired
    (encode(GossipText("p", "t", 1.0))[:-3], "truncated"),
    (encode(GossipText("p", "t", 1.0)) + b"\x00", "bad-tag"),  # field number 0
    (bytes([CODEC_VERSION, 5, 0xFF, 0xFF]), "truncated"),
    (bytes([CODEC_VERSION, 5]) + b"\xff" * 11, "bad-varint"),
    (bytes([CODEC_VERSION, 5, 0x0F]), "bad-wire-type"),  # wire type 7
    (bytes([CODEC_VERSION, 5, 0x0A, 2, 0xC3, 0x28]), "bad-utf8"),
    (bytes([CODEC_VERSION, 5, 0x08, 1]), "wrong-type"),  # GossipText.sender as a varint
    (bytes([CODEC_VERSION, 5, 0x12, 1, ord("t")]), "missing-field"),  # text without sender
    (bytes([CODEC_VERSION, 5, 0x0A, 0]), "missing-field"),  # an empty sender is no sender
])
def test_malformed_input_is_rejected_with_a_reason(data, reason):
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.reason == reason


def test_size_limits_both_ways():
    big = GossipText("p", "x" * 5000, 1.0)
    with pytest.raises(ValueError, match="over the 1024-byte limit"):
        encode(big, max_size=1024)
    with pytest.raises(DecodeError) as info:
        decode(encode(big), max_size=1024)
    assert info.value.reason == "oversized"


def test_a_huge_announced_length_cannot_allocate():
    # A CapabilityAdvertisement whose capability string claims 2**60 bytes in a few bytes.
    head = bytes([CODEC_VERSION, 1, 0x0A, 1, ord("p"), 0x12, 1, ord("w"), 0x1A])
    with pytest.raises(DecodeError) as info:
        decode(head + b"\x80\x80\x80\x80\x80\x80\x80\x80\x10")
    assert info.value.reason == "truncated"


def test_unknown_fields_are_skipped_and_errors_name_the_field():
    body = encode(GossipText("p", "t", 1.0))
    extended = body + bytes([0xA2, 0x06, 3]) + b"new" + bytes([0xA8, 0x06, 0x2A])  # fields 100 (bytes), 101 (varint)
    assert decode(extended) == GossipText("p", "t", 1.0)
    with pytest.raises(DecodeError, match="GossipText: sender"):
        decode(bytes([CODEC_VERSION, 5, 0x08, 1]))
    with pytest.raises(DecodeError, match="TaskReceipt without signature"):
        decode(encode(TaskReceipt("t", 1, "s", "w", 1, "d", 0.0, b"")))
    with pytest.raises(ValueError, match=r"TaskRequest\.attempt"):
        encode(TaskRequest("t", "echo", b"", "s", -1, 0, 1.0, 0, 0.0))
    assert decode(encode(TaskRequest("t", "echo", bytearray(b"x"), "s", 1.0, 0, 1, 0, 0))).payload == b"x"


def test_advert_without_ttl_is_live_for_three_heartbeats_of_the_receiver():
    now = [100.0]
    book = PeerBook(heartbeat_interval=2.0, clock=lambda: now[0])
    book.on_advertisement(_ad("p1", ("compute", "storage")))  # an older node: no TTL
    book.on_advertisement(_ad("p2", ("storage",)))
    assert {r.peer_id for r in book.with_capability("storage")} == {"p1", "p2"}
    now[0] += 5.0
    book.on_advertisement(_ad("p2", ("storage",)))
    now[0] += 1.5  # p1 silent for 6.5 s > 3 x 2 s; p2 for 1.5 s
    assert [r.peer_id for r in book.live()] == ["p2"]
    book.expire(keep_for=5.0)
    assert book.get("p1") is None and book.get("p2") is not None


def test_the_senders_ttl_decides_and_a_goodbye_removes_at_once():
    now = [0.0]
    book = PeerBook(heartbeat_interval=1.0, clock=lambda: now[0])
    book.on_advertisement(_ad("slow", ttl=300.0))
    book.on_advertisement(_ad("fast", ttl=9.0))
    now[0] = 100.0  # far past the receiver's own default (3 s)
    assert [r.peer_id for r in book.live()] == ["slow"]
    book.on_advertisement(_ad("slow", ttl=0.0))
    assert book.live() == [] and book.get("slow") is None
    for bad in (float("nan"), float("inf"), -5.0):  # a nonsense TTL falls back to the default, capped
        book.on_advertisement(_ad("odd", ttl=bad))
        assert book.get("odd").expires_at <= now[0] + 7 * 86400


def test_second_hand_records_never_override_first_hand_ones():
    now = [0.0]
    book = PeerBook(heartbeat_interval=1.0, clock=lambda: now[0])
    book.on_advertisement(_ad("p1", ("compute",), ttl=30.0))
    assert not book.on_synced(_ad("p1", ("evil",), ttl=60.0))  # live first-hand: kept
    assert book.get("p1").capabilities == ["compute"]
    assert book.on_synced(_ad("p2", ("compute",), ttl=20.0))  # unknown: taken, with its time left
    assert book.get("p2").hearsay
    assert not book.on_synced(_ad("p3", ttl=None))  # a record without time left is not hearsay we can age
    now[0] = 21.0
    assert {r.peer_id for r in book.live()} == {"p1"}
    book.on_advertisement(_ad("p2", ("compute",), ttl=30.0))  # the node itself: first-hand again
    assert not book.get("p2").hearsay
    snap = {ad.peer_id: ad.ttl_s for ad in book.snapshot()}
    assert snap.keys() == {"p1", "p2"} and 0 < snap["p1"] <= 9.0 and snap["p2"] == pytest.approx(30.0)


def test_the_book_is_bounded_and_samples_are_bounded():
    now = [0.0]
    book = PeerBook(heartbeat_interval=1.0, clock=lambda: now[0], max_records=50)
    for i in range(200):
        now[0] += 0.01
        book.on_advertisement(_ad(f"p{i:03d}", ttl=100.0 + i))
    assert len(book.records) == 50
    assert book.get("p199") is not None and book.get("p000") is None  # the closest to expiry went first
    sample = book.with_capability("compute", limit=8)
    assert len(sample) == 8 and sample == book.with_capability("compute", limit=8)  # stable between rotations
    assert len(book.with_capability("compute")) == 50


def test_refresh_interval_keeps_what_a_node_receives_bounded():
    # Small networks: the old cadence (every third heartbeat); large ones: N / rate, so N nodes' refreshes reach
    # each node at about TARGET_RECEIVE_RATE per second.
    assert refresh_interval(30.0, 10) == 90.0
    for n in (1000, 10000, 100000):
        assert n / refresh_interval(30.0, n) == pytest.approx(TARGET_RECEIVE_RATE)


def test_advertisement_timestamps_give_each_peer_a_clock_offset():
    import time

    book = PeerBook(heartbeat_interval=2.0)
    book.on_advertisement(_ad("p1", ("compute",)))
    assert book.get("p1").clock_offset is None  # no timestamp yet
    ad = _ad("p1", ("compute",))
    before = time.time()
    ad.sent_at = before - 5.0  # its clock 5 s behind ours
    book.on_advertisement(ad)
    after = time.time()
    assert 5.0 <= book.get("p1").clock_offset <= 5.0 + (after - before)
    ad.sent_at = time.time() + 2.0  # now 2 s ahead
    book.on_advertisement(ad)
    assert -2.0 <= book.get("p1").clock_offset < -1.9
    ad.sent_at = time.time() - 63.0  # an old advertisement replayed late (GossipSub to a reconnected peer)
    book.on_advertisement(ad)
    assert -2.0 <= book.get("p1").clock_offset < -1.9  # delivery delay is never negative: the smallest sample counts


def test_a_peer_first_known_from_a_pulled_view_is_identified_once():
    seen = []
    book = PeerBook(heartbeat_interval=1.0)
    book.on_identified = lambda rec: seen.append((rec.peer_id, rec.role))
    assert book.on_synced(_ad("p1", ttl=30.0))
    book.on_advertisement(_ad("p1", ttl=30.0))  # first-hand now, same role and capabilities
    assert seen == [("p1", "worker")]


def test_a_refresh_is_shed_under_cpu_pressure_only_while_the_last_one_is_recent():
    from p2p_fast.protocols.presence import MISSED_REFRESHES_BEFORE_DEAD, SHED_REFRESH_AT_MOST, may_skip_refresh

    nominal = 50.0
    assert may_skip_refresh(now=100.0, last_publish=60.0, nominal=nominal)  # 40 s ago: one skip costs nothing
    assert not may_skip_refresh(now=100.0, last_publish=100.0 - SHED_REFRESH_AT_MOST * nominal, nominal=nominal)
    assert not may_skip_refresh(now=1000.0, last_publish=-math.inf, nominal=nominal)  # never published
    # receivers keep the record for MISSED_REFRESHES_BEFORE_DEAD x nominal: a node that sheds still refreshes in time
    assert SHED_REFRESH_AT_MOST + 1.0 < MISSED_REFRESHES_BEFORE_DEAD


def test_a_joining_node_repeats_its_advertisement_until_its_mesh_delivers_then_on_schedule():
    from p2p_fast.protocols.presence import JOIN_REPEATS, JOIN_RETRY_FOR, JOIN_RETRY_S, JoinSchedule

    def publishes(heard_at: float | None, until: float) -> list[float]:
        join, last, out, t = JoinSchedule(), -math.inf, [], 0.0
        while t <= until:
            if join.due(t, topic_has_peer=t >= 5.0, heard_others=heard_at is not None and t >= heard_at,
                        last_publish=last):
                out.append(t)
                last = t
            t = round(t + 1.0, 1)
        return out

    # Nobody in the topic yet: nothing. A mesh that delivers from the start: join, at once again, then the repeats.
    assert publishes(heard_at=None, until=4.0) == []
    assert publishes(heard_at=5.0, until=200.0) == [5.0, 6.0] + [6.0 + r for r in JOIN_REPEATS]
    # Links stuck behind an overloaded peer for 40 s: retries 3, 6, 12 s... apart meanwhile, the full schedule once
    # heard.
    stuck = publishes(heard_at=45.0, until=200.0)
    before = [t for t in stuck if t < 45.0]
    assert before == [5.0, 5.0 + JOIN_RETRY_S, 5.0 + 3 * JOIN_RETRY_S, 5.0 + 7 * JOIN_RETRY_S]
    assert [t for t in stuck if t >= 45.0] == [45.0] + [45.0 + r for r in JOIN_REPEATS]
    # A node alone in its topic for good stops retrying after JOIN_RETRY_FOR, having retried a handful of times.
    alone = publishes(heard_at=None, until=1000.0)
    assert max(alone) == 5.0 + JOIN_RETRY_FOR + JOIN_REPEATS[-1]
    assert len(alone) <= 1 + math.log2(JOIN_RETRY_FOR / JOIN_RETRY_S) + 1 + 1 + len(JOIN_REPEATS)

def test_pulls_come_fast_while_they_add_records_and_at_the_refresh_interval_once_they_do_not():
    from p2p_fast.protocols.presence import SYNC_FIRST_GAP, next_sync_gap

    refresh, gap, gaps = 90.0, 0.0, []
    for _ in range(6):  # a growing network: every pull adds something
        gap = next_sync_gap(gap, added=3, refresh=refresh)
        gaps.append(gap)
    assert gaps == [SYNC_FIRST_GAP, 2 * SYNC_FIRST_GAP, 4 * SYNC_FIRST_GAP, 8 * SYNC_FIRST_GAP, 80.0, refresh]
    assert next_sync_gap(SYNC_FIRST_GAP, added=0, refresh=refresh) == refresh  # the view is complete: steady state
    # a pull that failed or timed out is no proof of a complete view: soon again, backing off
    assert next_sync_gap(0.0, added=0, refresh=refresh, failed=True) == SYNC_FIRST_GAP
    assert next_sync_gap(SYNC_FIRST_GAP, added=0, refresh=refresh, failed=True) == 2 * SYNC_FIRST_GAP


def test_a_joining_node_pulls_at_least_every_20_s_while_pulls_add_records_and_only_while_it_joins():
    from p2p_fast.protocols.presence import JOIN_SYNC_MAX_GAP, SYNC_FIRST_GAP, next_sync_gap

    refresh, gap, gaps = 200.0, 0.0, []
    for _ in range(6):  # its first minutes in a growing network: every pull adds something
        gap = next_sync_gap(gap, added=2, refresh=refresh, joining=True)
        gaps.append(gap)
    assert gaps == [SYNC_FIRST_GAP, 2 * SYNC_FIRST_GAP, JOIN_SYNC_MAX_GAP, JOIN_SYNC_MAX_GAP, JOIN_SYNC_MAX_GAP,
                    JOIN_SYNC_MAX_GAP]
    # nothing added: the view is complete, steady state at once, joining or not
    assert next_sync_gap(JOIN_SYNC_MAX_GAP, added=0, refresh=refresh, joining=True) == refresh
    # failures back off as before (a loaded network is not pulled harder)
    assert next_sync_gap(JOIN_SYNC_MAX_GAP, added=0, refresh=refresh, failed=True, joining=True) == 40.0
    # after the join phase a pull that still adds records (churn) doubles on towards the refresh interval
    assert next_sync_gap(JOIN_SYNC_MAX_GAP, added=1, refresh=refresh, joining=False) == 40.0
