"""What the task package needs from the rest of the node, each as a small interface.

The task code never sees the ``Node``: the application hands it these (``TaskEnv`` in ``service.py`` bundles them).
Each Protocol lists only the members the task code calls, so a test or another application can supply its own.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from libp2p.peer.id import ID


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
