"""The message types nodes exchange (gossip topics and direct streams).

``CapabilityAdvertisement`` and ``HeartBeat`` keep every node's live view of who can do what; ``TaskRequest`` and
``TaskResponse`` carry work and results. Field order is the wire order (see ``codec``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from p2p_fast.protocols.codec import Message, register


@register
@dataclass
class CapabilityAdvertisement(Message):
    """What a node is and can do; published on ``<protocol_version>/capabilities`` when it joins, when it changes,
    and on a slow refresh (``protocol.presence``). ``ttl_s``: how long receivers keep it live without hearing from
    the node again (None from nodes before the field existed: the receiver's default applies; 0: the node leaves).
    Served again, with the time left, to peers that ask for the live view (``presence-sync``)."""

    TYPE: ClassVar[int] = 1
    KINDS: ClassVar[str] = "ssSuuufSu?f?f"
    peer_id: str
    role: str
    capabilities: list[str]
    slots: int
    free_slots: int
    queue_depth: int
    load: float
    addrs: list[str] = field(default_factory=list)
    seq: int = 0
    ttl_s: float | None = None
    sent_at: float | None = None  # the sender's wall clock (time.time()) when published: peers' clock offsets


@register
@dataclass
class HeartBeat(Message):
    """Liveness and load between advertisements, from nodes before presence scaled (no longer published: a receiver
    still takes one as a sign of life for the default TTL)."""

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
    KINDS: ClassVar[str] = "sususbsf?u"
    task_id: str
    attempt: int
    worker: str
    status: int  # TASK_OK .. TASK_INVALID below: 0 ok, 1 failed, 2 rejected, 3 timed out, 4 busy, 5 cancelled, 6 invalid
    error: str
    result: bytes
    result_digest: str
    elapsed_s: float
    # How many slot-taking requests this worker holds for one submitter at once (running + queued): the most a
    # submitter may have in flight there without being answered "busy" (``tasks.window``). None: not said.
    window: int | None = None


@register
@dataclass
class GossipText(Message):
    """A free-text broadcast (console ``gossip <text>``): the simplest end-to-end check of the mesh."""

    TYPE: ClassVar[int] = 5
    KINDS: ClassVar[str] = "ssf"
    sender: str
    text: str
    sent_at: float


# -- task protocol (``/<protocol_version>/task/1.0.0``, see docs/protocol.md) ------------------------------------------
# TaskResponse.status values.
TASK_OK = 0  # result is valid; the submitter verifies it and answers with a TaskReceipt
TASK_FAILED = 1  # the task raised on this worker; the submitter retries elsewhere
TASK_REJECTED = 2  # this worker cannot run the type (unknown type, capability missing, payload too big)
TASK_TIMED_OUT = 3  # the worker stopped the task at timeout_s (its process is killed)
TASK_BUSY = 4  # no free slot right now; not an attempt, the submitter picks another worker
TASK_CANCELLED = 5  # stopped on the submitter's TaskCancel (or because its stream went away)
TASK_INVALID = 6  # the payload is wrong for the type (deterministic): retrying cannot help


@register
@dataclass
class TaskReceipt(Message):
    """The submitter's signed acknowledgement of one verified result: the worker's proof of a credit.

    ``signature`` is the submitter's node-key signature over this message encoded with ``signature=b""``
    (see ``p2p_fast.protocols.tasks.ledger.receipt_bytes``)."""

    TYPE: ClassVar[int] = 6
    KINDS: ClassVar[str] = "sussusfb"
    task_id: str
    attempt: int
    submitter: str
    worker: str
    reward: int
    result_digest: str
    issued_at: float
    signature: bytes


@register
@dataclass
class TaskCancel(Message):
    """Submitter -> worker: stop this attempt (timed out on the submitter's clock, cancelled by the user)."""

    TYPE: ClassVar[int] = 7
    KINDS: ClassVar[str] = "sus"
    task_id: str
    attempt: int
    reason: str


@register
@dataclass
class BlobPut(Message):
    """Storage worker -> storage worker (``/<protocol_version>/blob/1.0.0``): keep a replica of a blob."""

    TYPE: ClassVar[int] = 8
    KINDS: ClassVar[str] = "sb"
    key: str
    data: bytes


@register
@dataclass
class BlobGet(Message):
    """Storage worker -> storage worker: send me the blob ``key`` if you hold it."""

    TYPE: ClassVar[int] = 9
    KINDS: ClassVar[str] = "s"
    key: str


@register
@dataclass
class BlobReply(Message):
    """Answer to BlobPut (status only) or BlobGet (status and data). status: 0 ok, 1 not found, 2 error."""

    TYPE: ClassVar[int] = 10
    KINDS: ClassVar[str] = "subs"
    key: str
    status: int
    data: bytes
    error: str
