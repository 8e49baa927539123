"""The message types nodes exchange (gossip topics and direct streams).

Each dataclass here is the Python face of one protobuf message in ``pb/messages.proto`` (``PB``), with the same
field names: the rest of the code builds and reads these dataclasses and never sees protobuf. ``TYPE`` is the
message type byte (``MessageType`` in the schema); ``REQUIRED`` names the fields a message is refused without
(``codec``: "missing-field"). ``CapabilityAdvertisement`` keeps every node's live view of who can do what;
``TaskRequest`` and ``TaskResponse`` carry work and results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from p2p_fast.protocols.codec import Message, register
from p2p_fast.protocols.pb import messages_pb2 as pb


@register
@dataclass
class CapabilityAdvertisement(Message):
    """What a node is and can do; published on ``<protocol_version>/capabilities`` when it joins, when it changes,
    and on a slow refresh (``protocol.presence``). ``ttl_s``: how long receivers keep it live without hearing from
    the node again (None from nodes before the field existed: the receiver's default applies; 0: the node leaves).
    Served again, with the time left, to peers that ask for the live view (``presence-sync``)."""

    TYPE: ClassVar[int] = pb.CAPABILITY_ADVERTISEMENT
    PB: ClassVar[type] = pb.CapabilityAdvertisement
    REQUIRED: ClassVar[tuple[str, ...]] = ("peer_id", "role")
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
class TaskRequest(Message):
    TYPE: ClassVar[int] = pb.TASK_REQUEST
    PB: ClassVar[type] = pb.TaskRequest
    REQUIRED: ClassVar[tuple[str, ...]] = ("task_id", "task_type", "submitter")
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
    TYPE: ClassVar[int] = pb.TASK_RESPONSE
    PB: ClassVar[type] = pb.TaskResponse
    REQUIRED: ClassVar[tuple[str, ...]] = ("task_id", "worker")
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

    TYPE: ClassVar[int] = pb.GOSSIP_TEXT
    PB: ClassVar[type] = pb.GossipText
    REQUIRED: ClassVar[tuple[str, ...]] = ("sender",)
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

    ``signature`` is the submitter's node-key signature over a canonical encoding of the other fields, not over
    the protobuf bytes (``p2p_fast.protocols.tasks.ledger.receipt_bytes`` says why)."""

    TYPE: ClassVar[int] = pb.TASK_RECEIPT
    PB: ClassVar[type] = pb.TaskReceipt
    REQUIRED: ClassVar[tuple[str, ...]] = ("task_id", "submitter", "worker", "signature")
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

    TYPE: ClassVar[int] = pb.TASK_CANCEL
    PB: ClassVar[type] = pb.TaskCancel
    REQUIRED: ClassVar[tuple[str, ...]] = ("task_id",)
    task_id: str
    attempt: int
    reason: str


@register
@dataclass
class BlobPut(Message):
    """Storage worker -> storage worker (``/<protocol_version>/blob/1.0.0``): keep a replica of a blob."""

    TYPE: ClassVar[int] = pb.BLOB_PUT
    PB: ClassVar[type] = pb.BlobPut
    REQUIRED: ClassVar[tuple[str, ...]] = ("key",)
    key: str
    data: bytes


@register
@dataclass
class BlobGet(Message):
    """Storage worker -> storage worker: send me the blob ``key`` if you hold it."""

    TYPE: ClassVar[int] = pb.BLOB_GET
    PB: ClassVar[type] = pb.BlobGet
    REQUIRED: ClassVar[tuple[str, ...]] = ("key",)
    key: str


@register
@dataclass
class BlobReply(Message):
    """Answer to BlobPut (status only) or BlobGet (status and data). status: 0 ok, 1 not found, 2 error."""

    TYPE: ClassVar[int] = pb.BLOB_REPLY
    PB: ClassVar[type] = pb.BlobReply
    REQUIRED: ClassVar[tuple[str, ...]] = ("key",)
    key: str
    status: int
    data: bytes
    error: str
