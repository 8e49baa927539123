"""Helpers for the pubsub patch tests (``test_pubsub_*.py``, which import it by name; not a conftest, whose module
name ``conftest`` other test folders import from): real py-libp2p Pubsubs, stock or tuned as the node builds them,
signed messages, and a call counter."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from p2p_fast.stack.patches.pubsub_tuning import tune_pubsub

TOPIC = "p2p-fast/tuning-test"


class Counter:
    """A function that records its calls and calls through."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls: list[tuple] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        return self.fn(*args)


def build_pubsub(host: Any, tuned: bool) -> Pubsub:
    """A GossipSub Pubsub on ``host``: stock py-libp2p, or tuned as ``p2p_fast.stack.pubsub`` tunes its own."""
    router = GossipSub(protocols=["/meshsub/1.1.0"], degree=6, degree_low=4, degree_high=12,
                       heartbeat_interval=1, heartbeat_initial_delay=0.05, spam_protection_enabled=False)
    if not tuned:
        return Pubsub(host, router)
    pubsub = Pubsub(host, router, **tune_pubsub.constructor_kwargs())
    tune_pubsub.after_construct(pubsub, 120)
    return pubsub


def signed_message(pubsub: Pubsub, data: bytes, seqno: int, topic: str = TOPIC) -> rpc_pb2.Message:
    """A message exactly as Pubsub.publish builds and signs it."""
    msg = rpc_pb2.Message(data=data, topicIDs=[topic], from_id=pubsub.my_id.to_bytes(),
                          seqno=seqno.to_bytes(8, "big"))
    msg.signature = pubsub.sign_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = pubsub.host.get_public_key().serialize()
    return msg


def count(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Counter:
    """Replace ``owner.name`` by a :class:`Counter` of it for this test."""
    counter = Counter(getattr(owner, name))
    monkeypatch.setattr(owner, name, counter)
    return counter
