"""A publisher flooding a subscriber as fast as its outbound queue allows loses nothing (two real processes).

Found by the gossip benchmark on a quiet machine: once the receive path got fast (64 KiB buffered reads, merged
RPCs, plain push tasks), one read handed hundreds of messages to the topic's subscription buffer before the
subscriber's reader task could run, and py-libp2p dropped what did not fit ("fail to deliver message to
subscription"): ~1000 of 8000 messages in a 2 s flood with a 128-message buffer, although the reader kept up on
average. The flood uses the benchmark's own peer processes (``bench/macro/peer.py``, our node's gossip stack).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MACRO = Path(__file__).resolve().parents[2] / "bench" / "macro"


@pytest.fixture
def ours_pair():
    if str(MACRO) not in sys.path:
        sys.path.insert(0, str(MACRO))
    from gossip_bench import start_pair

    pub, sub = start_pair("ours")
    try:
        yield pub, sub
    finally:
        pub.close()
        sub.close()


def test_a_flood_at_the_pairs_capacity_loses_no_message(ours_pair):
    from gossip_bench import Trials, capacity

    pub, sub = ours_pair
    trials = Trials(pub, [sub])
    for _ in range(2):
        got = capacity(trials, 256, 1.5)
        assert got["sent"] > 500, got
        lost, sent, rate = got["lost"], got["sent"], got["msgs_per_s"]
        assert lost == 0, f"{lost} of {sent} messages lost in a {rate:.0f} msg/s flood"
