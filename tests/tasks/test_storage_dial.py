"""A storage worker replicates a put to a live storage peer it holds no connection to and whose address only its live
view knows. ``tests/tasks/test_rolling_update.py`` got ``replicas=1`` so, in two full runs: "no stream:
SwarmException: No known addresses to peer" (the replication asked for a stream without dialling first)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from p2p_fast.protocols.tasks.storage import Storage
from relay_hosts import hosts

PROTO = "/p2p-fast-test/blob/1.0.0"


@dataclass
class Ad:
    peer_id: str
    addrs: list[str]
    capabilities: list[str] = field(default_factory=lambda: ["storage"])
    slots: int = 1
    free_slots: int = 1
    load: float = 0.0


class Directory:
    """A live view holding the given adverts (the task code's ``PeerDirectory`` interface)."""

    def __init__(self, ads: list[Ad]) -> None:
        self.ads = {a.peer_id: a for a in ads}

    def get(self, peer_id: str) -> Any:
        return self.ads.get(peer_id)

    def is_live(self, rec: Any) -> bool:
        return rec.peer_id in self.ads

    def with_capability(self, capability: str, limit: int | None = None) -> list[Ad]:
        return [a for a in self.ads.values() if capability in a.capabilities][:limit]

    def network_size(self) -> int:
        return len(self.ads) + 1


def test_a_put_reaches_a_storage_peer_known_only_from_the_live_view(tmp_path: Path) -> None:
    async def main() -> tuple[bytes, int, bool]:
        async with hosts(2) as (a, b):
            b_addrs = [str(x).split("/p2p/")[0] for x in b.get_addrs()]
            view = Directory([Ad(b.get_id().to_base58(), b_addrs)])
            store_a = Storage(a, tmp_path / "a", PROTO, 2, 1 << 20, 10.0, lambda: ["storage"], view)
            store_b = Storage(b, tmp_path / "b", PROTO, 2, 1 << 20, 10.0, lambda: ["storage"], Directory([]))
            b.set_stream_handler(PROTO, store_b.handle_stream)
            connected_before = bool(a.get_network().get_connections(b.get_id()))
            out = await store_a.run(b"put hello")
            return out, store_b.store.count(), connected_before

    out, copies_at_b, connected_before = trio.run(main)
    assert not connected_before
    assert out.endswith(b" replicas=2"), out
    assert copies_at_b == 1
