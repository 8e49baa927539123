"""The message codec's error reasons and the live view's three-missed-heartbeats rule."""

from __future__ import annotations

import pytest

from p2p_fast.protocol.codec import CODEC_VERSION, DecodeError, decode, encode
from p2p_fast.protocol.messages import CapabilityAdvertisement, GossipText, HeartBeat
from p2p_fast.protocol.presence import PeerBook


def _ad(peer: str = "p1", caps=("compute",)) -> CapabilityAdvertisement:
    return CapabilityAdvertisement(peer_id=peer, role="worker", capabilities=list(caps), slots=2, free_slots=1,
                                   queue_depth=0, load=0.5, addrs=["/ip4/127.0.0.1/tcp/1"], seq=7)


def test_round_trip_every_message_kind():
    for msg in (_ad(), HeartBeat("p1", 3, 1, 0, 0.25, 1234.5), GossipText("p1", "héllo", 1.0)):
        assert decode(encode(msg)) == msg


@pytest.mark.parametrize("data, reason", [
    (b"", "truncated"),
    (b"\x01", "truncated"),
    (bytes([CODEC_VERSION + 1, 1]), "bad-version"),
    (bytes([CODEC_VERSION, 250]), "unknown-type"),
    (encode(GossipText("p", "t", 1.0))[:-3], "truncated"),
    (encode(GossipText("p", "t", 1.0)) + b"\x00", "trailing-bytes"),
    (bytes([CODEC_VERSION, 5, 0xFF, 0xFF]), "bad-varint"),
    (bytes([CODEC_VERSION, 5, 2, 0xC3, 0x28]), "bad-utf8"),
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


def test_a_huge_list_count_cannot_allocate():
    # A CapabilityAdvertisement whose capability count claims 2**60 items in a few bytes.
    head = bytes([CODEC_VERSION, 1, 1, ord("p"), 1, ord("w")])
    with pytest.raises(DecodeError):
        decode(head + b"\x80\x80\x80\x80\x80\x80\x80\x80\x10")


def test_peer_leaves_the_live_view_after_three_missed_heartbeats():
    now = [100.0]
    book = PeerBook(heartbeat_interval=2.0, clock=lambda: now[0])
    book.on_advertisement(_ad("p1", ("compute", "storage")))
    book.on_advertisement(_ad("p2", ("storage",)))
    assert {r.peer_id for r in book.with_capability("storage")} == {"p1", "p2"}
    now[0] += 5.0
    book.on_heartbeat(HeartBeat("p2", 8, 0, 3, 0.9, 0.0))
    now[0] += 1.5  # p1 silent for 6.5 s > 3 x 2 s; p2 for 1.5 s
    assert [r.peer_id for r in book.live()] == ["p2"]
    assert book.get("p2").queue_depth == 3 and book.get("p2").free_slots == 0
    book.expire(keep_for=5.0)
    assert book.get("p1") is None and book.get("p2") is not None


def test_heartbeat_timestamps_give_each_peer_a_clock_offset():
    import time

    book = PeerBook(heartbeat_interval=2.0)
    book.on_advertisement(_ad("p1", ("compute",)))
    assert book.get("p1").clock_offset is None  # no heartbeat yet
    before = time.time()
    book.on_heartbeat(HeartBeat("p1", 2, 1, 0, 0.1, before - 5.0))  # its clock 5 s behind ours
    after = time.time()
    assert 5.0 <= book.get("p1").clock_offset <= 5.0 + (after - before)
    book.on_heartbeat(HeartBeat("p1", 3, 1, 0, 0.1, time.time() + 2.0))  # now 2 s ahead
    assert -2.0 <= book.get("p1").clock_offset < -1.9
