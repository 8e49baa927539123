"""Gossip that does not trust its senders: strict signatures with a reason for every refusal, and peer scoring.

py-libp2p's Pubsub with ``strict_signing`` (on: we never turn it off) drops a message whose signature does not
verify, silently. :class:`GuardedPubsub` makes that drop visible and costly for whoever forwarded it: the check says
why (``unsigned``: no signature; ``wrong-sender``: the signer's key is not the key of the peer named in ``from``;
``bad-signature``: the signature does not verify), counts it in ``p2p_messages_rejected_total{topic, reason}`` and
charges the forwarding peer an invalid message in GossipSub's score (P4); what the score gate then refuses from
that peer is counted as ``low-score``. :func:`score_params` are the thresholds:
a peer that forwards a few invalid messages is first left out of gossip, then refused, then graylisted, and earns
its way back as the penalty decays. IP colocation (P7) is off: a pod network, a NAT or a test bed puts many honest
peers behind one address.

How the forwarder reaches the check: ``Pubsub.push_msg`` runs, without yielding, from its entry to the signature
check; :meth:`GuardedPubsub.push_msg` records (pubsub, forwarder, message) right before entering it, and the check
uses that record only for that very message object.

Why this is not in :mod:`p2p_fast.stack.patches`: :class:`GuardedPubsub` is a subclass we construct ourselves
(``p2p_fast.stack.pubsub``) and only its instances change; py-libp2p's ``Pubsub`` is untouched. Its signature check
plugs into our own ``pubsub_signer_keys.VERIFY`` (:func:`install`), not into py-libp2p.
"""

from __future__ import annotations

import logging
from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams

from p2p_fast.core import metrics
from p2p_fast.stack.patches import pubsub_signer_keys

log = logging.getLogger(__name__)
UNSIGNED, WRONG_SENDER, BAD_SIGNATURE, LOW_SCORE = "unsigned", "wrong-sender", "bad-signature", "low-score"

# What the P4 penalty does to a forwarder's score (one invalid message = -INVALID_WEIGHT; honest first deliveries
# earn up to +FIRST_DELIVERY_CAP): 2 invalid messages -> no gossip with it, 3 -> its messages are refused,
# 4 -> graylisted (its RPCs ignored). Each heartbeat keeps INVALID_DECAY of the count.
INVALID_WEIGHT = 20.0
INVALID_DECAY = 0.95
FIRST_DELIVERY_WEIGHT = 1.0
FIRST_DELIVERY_CAP = 10.0
GOSSIP_THRESHOLD = -20.0
PUBLISH_THRESHOLD = -50.0
GRAYLIST_THRESHOLD = -80.0


def score_params() -> ScoreParams:
    """GossipSub v1.1 peer-score parameters for our network (see the module doc)."""
    return ScoreParams(
        p2_first_message_deliveries=TopicScoreParams(weight=FIRST_DELIVERY_WEIGHT, cap=FIRST_DELIVERY_CAP,
                                                     decay=0.9),
        p4_invalid_messages=TopicScoreParams(weight=INVALID_WEIGHT, cap=1000.0, decay=INVALID_DECAY),
        # py-libp2p's own misbehaviour penalties (IHAVE/IWANT spam 5, GRAFT flood 10) count above 10, decaying.
        p5_behavior_penalty_weight=1.0,
        p5_behavior_penalty_threshold=10.0,
        p5_behavior_penalty_decay=0.9,
        p7_ip_colocation_weight=0.0,
        gossip_threshold=GOSSIP_THRESHOLD,
        publish_threshold=PUBLISH_THRESHOLD,
        graylist_threshold=GRAYLIST_THRESHOLD,
        accept_px_threshold=0.0,
    )


class _Current:
    __slots__ = ("pubsub", "forwarder", "msg")

    def __init__(self) -> None:
        self.pubsub: Any = None
        self.forwarder: ID | None = None
        self.msg: Any = None


_CURRENT = _Current()


def signature_problem(msg: Any) -> str | None:
    """Why ``msg`` fails the strict-signing rules, or None when it passes them."""
    if pubsub_signer_keys.verify_signature(msg):
        return None
    if not msg.signature:
        return UNSIGNED
    if pubsub_signer_keys.signer_key(msg) is None:
        return WRONG_SENDER
    return BAD_SIGNATURE


def checked_verify(msg: Any) -> bool:
    """The signature check every tuned Pubsub runs (``pubsub_signer_keys.VERIFY``): counts and charges refusals."""
    problem = signature_problem(msg)
    if problem is None:
        return True
    cur = _CURRENT
    forwarder = cur.forwarder if cur.msg is msg else None
    for topic in msg.topicIDs or ["-"]:
        metrics.MESSAGES_REJECTED.labels(topic, problem).inc()
        if forwarder is not None:
            scorer = getattr(getattr(cur.pubsub, "router", None), "scorer", None)
            if scorer is not None:
                scorer.on_invalid_message(forwarder, topic)
    log.info("dropped gossip claiming to be from %s, forwarded by %s: %s", _safe_id(msg.from_id),
             forwarder or "?", problem)
    return False


def _safe_id(raw: bytes) -> str:
    try:
        return ID(raw).to_base58()
    except Exception:
        return raw[:16].hex()


class GuardedPubsub(Pubsub):
    """Pubsub whose signature check knows the forwarding peer, and which counts what the score gate refuses."""

    async def push_msg(self, msg_forwarder: ID, msg: Any) -> None:
        scorer = getattr(self.router, "scorer", None)
        if (scorer is not None and msg_forwarder != self.my_id and not self._is_msg_seen(msg)
                and not scorer.allow_publish(msg_forwarder, list(msg.topicIDs))):
            # Stock push_msg drops it silently at the same gate; we drop it here, counted.
            for topic in msg.topicIDs or ["-"]:
                metrics.MESSAGES_REJECTED.labels(topic, LOW_SCORE).inc()
            return
        cur = _CURRENT
        cur.pubsub, cur.forwarder, cur.msg = self, msg_forwarder, msg
        try:
            await super().push_msg(msg_forwarder, msg)
        finally:
            if cur.msg is msg:
                cur.pubsub = cur.forwarder = cur.msg = None


def install() -> None:
    """Route every tuned Pubsub's signature check through :func:`checked_verify` (idempotent)."""
    pubsub_signer_keys.VERIFY = checked_verify
