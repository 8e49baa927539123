"""Who can run a capability: this node, the live peers that advertise it, and workers found in the DHT.

Advertisements (presence) cover the peers of our mesh; in a large network a worker may be known only by its DHT
provider record (``provider_key``; the service announces ours). Those are looked up when a submission names a type
nobody here advertises, and when a capability's queue has no candidate (at most every ``LOOKUP_EVERY`` seconds).
Their addresses go into the peerstore so the links can dial them.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import multiaddr
import trio
from libp2p.abc import IPeerStore
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core.multiaddrs import parse_multiaddrs
from p2p_fast.protocols.tasks.ports import PeerDirectory, ProviderRecords
from p2p_fast.protocols.tasks.spec import UnknownTaskType
from p2p_fast.protocols.tasks.types import TaskTypes

log = logging.getLogger(__name__)
LOOKUP_EVERY = 10.0
SUBMIT_LOOKUP_TIMEOUT = 1.5  # a submission waits this long for the DHT before it is refused as unknown
PROVIDERS_WANTED = 8
FUNCTIONS = "functions"  # the capability of workers that run Python functions (tasks.accept_functions)


def provider_key(protocol_version: str, capability: str) -> str:
    """The DHT key under which workers announce a capability."""
    return f"/{protocol_version}/task-capability/{capability}"


class WorkerFinder:
    def __init__(self, own_id: str, capabilities: Callable[[], Sequence[str]], book: PeerDirectory,
                 dht: ProviderRecords | None, peerstore: IPeerStore, protocol_version: str, types: TaskTypes,
                 on_found: Callable[[], None]) -> None:
        self.own_id = own_id
        self.capabilities = capabilities
        self.book = book
        self.dht = dht
        self.peerstore = peerstore
        self.protocol_version = protocol_version
        self.types = types
        self.on_found = on_found
        self.found: dict[str, dict[str, PeerInfo]] = {}  # capability -> DHT providers (peer id -> info)
        self.looked: dict[str, float] = {}

    def seen(self, capability: str) -> bool:
        if capability in self.capabilities():
            return True
        if self.book.with_capability(capability):
            return True
        return bool(self.found.get(capability))

    def providers(self, capability: str) -> dict[str, PeerInfo]:
        return self.found.get(capability, {})

    def capable_peers(self, capability: str, banned: Callable[[str], bool]) -> set[str]:
        """Every peer that could run ``capability`` now (cooling down or not), without the ``banned`` ones."""
        peers = {self.own_id} if capability in self.capabilities() else set()
        peers.update(r.peer_id for r in self.book.with_capability(capability))
        peers.update(self.found.get(capability, {}))
        return {p for p in peers if p == self.own_id or not banned(p)}

    def addrs_of(self, peer_id: str) -> list[multiaddr.Multiaddr]:
        """Where to dial ``peer_id``: its advertised addresses, then those of its DHT provider records."""
        rec = self.book.get(peer_id)
        out = parse_multiaddrs(rec.addrs if rec else ())
        for info in (found.get(peer_id) for found in self.found.values()):
            if info is not None:
                out.extend(info.addrs)
        return out

    async def ensure_known(self, type_name: str) -> None:
        """Fail fast on a type nobody can run: not ours, not advertised, not in the DHT."""
        if type_name == "function":
            await self._ensure_function_workers()
            return
        if self.types.get(type_name) is not None:
            return
        cap = self.types.capability_for(type_name)
        if self.seen(cap):
            return
        await self.lookup(cap, timeout=SUBMIT_LOOKUP_TIMEOUT)
        if self.seen(cap):
            return
        builtin = ", ".join(sorted(n for n, t in self.types.types.items() if t.builtin))
        raise UnknownTaskType(f"unknown task type {type_name!r}: not a built-in type ({builtin}), not installed "
                              f"on this node, and no live worker advertises the capability {cap!r}")

    async def _ensure_function_workers(self) -> None:
        """Python functions run only where a worker opted in (it advertises ``functions``): none live, say so now."""
        if self.seen(FUNCTIONS):
            return
        await self.lookup(FUNCTIONS, timeout=SUBMIT_LOOKUP_TIMEOUT)
        if not self.seen(FUNCTIONS):
            raise UnknownTaskType("no live worker runs Python functions: none advertises the capability 'functions' "
                                  "(workers opt in with tasks.accept_functions: true)")

    def lookup_soon(self, capability: str, nursery: trio.Nursery | None, timeout: float) -> None:
        """Start a DHT lookup for ``capability`` unless one ran within ``LOOKUP_EVERY``."""
        now = time.monotonic()
        if now - self.looked.get(capability, -1e9) > LOOKUP_EVERY and nursery is not None:
            self.looked[capability] = now
            nursery.start_soon(self.lookup, capability, timeout)

    async def lookup(self, capability: str, timeout: float) -> None:
        """Find workers beyond our mesh: DHT provider records per capability."""
        dht = self.dht
        if dht is None:
            return
        self.looked[capability] = time.monotonic()
        with trio.move_on_after(timeout):
            try:
                infos = await dht.find_providers(provider_key(self.protocol_version, capability), PROVIDERS_WANTED)
            except Exception as exc:
                log.debug("find_providers(%s) failed: %s", capability, exc)
                return
            found = {}
            for info in infos:
                pid = str(info.peer_id)
                if pid == self.own_id:
                    continue
                found[pid] = info
                if info.addrs:
                    try:
                        self.peerstore.add_addrs(info.peer_id, info.addrs, 3600)
                    except Exception:
                        pass
            if found:
                log.info("DHT: %d provider(s) of %s: %s", len(found), capability, ", ".join(found))
                self.found[capability] = found
                self.on_found()
