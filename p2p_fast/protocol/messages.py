"""The message types nodes exchange (gossip topics and direct streams).

``CapabilityAdvertisement`` and ``HeartBeat`` keep every node's live view of who can do what; ``TaskRequest`` and
``TaskResponse`` carry work and results. Field order is the wire order (see ``codec``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .codec import Message, register


@register
@dataclass
class CapabilityAdvertisement(Message):
    """What a node is and can do; published on ``<protocol_version>/capabilities`` every heartbeat interval."""

    TYPE: ClassVar[int] = 1
    KINDS: ClassVar[str] = "ssSuuufSu"
    peer_id: str
    role: str
    capabilities: list[str]
    slots: int
    free_slots: int
    queue_depth: int
    load: float
    addrs: list[str] = field(default_factory=list)
    seq: int = 0


@register
@dataclass
class HeartBeat(Message):
    """Liveness and load between advertisements; a worker that misses three leaves the live view."""

    TYPE: ClassVar[int] = 2
    KINDS: ClassVar[str] = "suuuff"
    peer_id: str
    seq: int
    free_slots: int
    queue_depth: int
    load: float
    timestamp: float


@register
@dataclass
class TaskRequest(Message):
    TYPE: ClassVar[int] = 3
    KINDS: ClassVar[str] = "ssbsuufuf"
    task_id: str
    task_type: str
    payload: bytes
    submitter: str
    attempt: int
    reward: int
    timeout_s: float
    max_retries: int
    created: float


@register
@dataclass
class TaskResponse(Message):
    TYPE: ClassVar[int] = 4
    KINDS: ClassVar[str] = "sususbsf"
    task_id: str
    attempt: int
    worker: str
    status: int  # 0 ok, 1 failed (task error), 2 rejected (unknown type, no slot, ...), 3 timed out
    error: str
    result: bytes
    result_digest: str
    elapsed_s: float


@register
@dataclass
class GossipText(Message):
    """A free-text broadcast (console ``gossip <text>``): the simplest end-to-end check of the mesh."""

    TYPE: ClassVar[int] = 5
    KINDS: ClassVar[str] = "ssf"
    sender: str
    text: str
    sent_at: float
