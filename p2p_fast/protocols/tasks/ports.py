"""What the task package needs from the rest of the node, each as a small interface.

The task code never sees the ``Node``: the application builds a ``TaskEnv`` (``p2p_fast.app.task_env``) and the
service hands each part only the fields it uses. Each Protocol lists only the members the task code calls, so a
test or another application can supply its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncContextManager, Callable, Mapping, Protocol, Sequence

from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2p_fast.core.config import TasksSection


class PeerAd(Protocol):
    """One peer as the presence protocol last heard of it (``presence.PeerRecord`` is one)."""

    peer_id: str
    capabilities: list[str]
    slots: int
    free_slots: int
    load: float
    addrs: list[str]


class PeerDirectory(Protocol):
    """The live view of the network (``presence.PeerBook``)."""

    def get(self, peer_id: str) -> Any:
        """The record of ``peer_id`` (a ``PeerAd``), live or not, or None."""

    def is_live(self, rec: Any) -> bool:
        """Whether the peer of ``rec`` is alive now."""

    def with_capability(self, capability: str, limit: int | None = None) -> Sequence[Any]:
        """Live peers (``PeerAd``) offering ``capability``, at most ``limit`` of them."""

    def network_size(self) -> int:
        """Live peers plus this node: an estimate of the network's size."""


class ProviderRecords(Protocol):
    """DHT provider records (``KadDHT``)."""

    async def provide(self, key: str) -> Any:
        """Announce this node under ``key``."""

    async def find_providers(self, key: str, count: int) -> Sequence[Any]:
        """Peers (``PeerInfo``) announced under ``key``."""


class RttTable(Protocol):
    """Round-trip times the health monitor measured (``HealthMonitor``)."""

    rtt: Mapping[ID, float]


class EventSink(Protocol):
    """The node's event bus (``GET /v1/events``)."""

    recording: bool

    def skip(self) -> None:
        """An event nobody can see: count it only."""

    def emit(self, type_: str, data: dict[str, Any], result: bytes | None = None) -> None:
        """Publish one event."""


class LoadGate(Protocol):
    """The node's load shedder: whether optional work of a kind may run now."""

    def allow(self, kind: str) -> bool:
        """True when work of ``kind`` may run now."""


@dataclass
class TaskEnv:
    """Everything the task service takes from its node."""

    host: IHost  # streams, dials, the peerstore, our keys
    tasks: TasksSection  # the ``tasks:`` config section
    protocol_version: str  # network.protocol_version: names the DHT keys of worker capabilities
    connection_timeout: float  # network.connection_timeout: dials, stream opens, DHT queries
    task_protocol: str  # the stream protocol ids
    blob_protocol: str
    data_dir: Path  # the journal, blobs and installed packages live here
    capabilities: Callable[[], Sequence[str]]  # this node's capabilities now (the worker runs what they cover)
    book: PeerDirectory
    dht: ProviderRecords | None = None
    rtt: RttTable | None = None
    events: EventSink | None = None
    shedder: LoadGate | None = None
    private_network: bool = False  # a PSK network: its members may send Python functions (tasks.accept_functions)
    on_storage_failure: Callable[[str], None] | None = None  # the journal cannot be written: the node stops
    # Connections opened inside this block are closed when it ends (connmgr.ConnManager.transient): DHT announcements
    transient_dials: Callable[[], AsyncContextManager[None]] | None = None

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()
