"""Joining the network from bootstrap addresses, and re-joining when the node has lost every peer.

Each configured address may be an IP or a DNS name, with or without ``/p2p/<id>``. A name is resolved on every round
(a Kubernetes headless service has one A record per pod, and pods come and go) and every address it yields is
dialed. Without an ID we first learn it (``probe``). A round runs at start, whenever the peer count is zero (with
backoff), and while we are connected to none of the bootstrap peers and are short of peers (``room()``) every
``REFRESH_EVERY`` seconds, doubling up to ``REFRESH_MAX`` while the refreshes change nothing. A bootstrap that pruned
us is not redialed while we have enough others: every worker of a large network redialing its pruned bootstrap
every 30 s made the bootstrap prune again every 30 s. Every wait is jittered, so nodes that lost their peers
together do not redial together.
"""

from __future__ import annotations

import logging
from typing import Callable

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core import metrics
from p2p_fast.core.multiaddrs import PeerAddr, parse_peer_multiaddr
from p2p_fast.stack.security.handshake import note_dial_timeout, note_probe_failure
from p2p_fast.protocols.discovery.connector import jittered
from p2p_fast.protocols.discovery.probe import ProbeError, probe_peer_id
from p2p_fast.protocols.discovery.resolve import resolve

log = logging.getLogger(__name__)
REFRESH_EVERY = 30.0
REFRESH_MAX = 600.0
MAX_BACKOFF = 30.0
WARN_EVERY = 60.0


class Bootstrapper:
    def __init__(self, host: IHost, addrs: list[str], interval: float, dial_timeout: float,
                 room: Callable[[], bool] = lambda: True) -> None:
        self.host = host
        self.room = room
        self.targets: list[PeerAddr] = [parse_peer_multiaddr(a) for a in addrs]
        self.texts = list(addrs)
        self.interval = interval
        self.dial_timeout = dial_timeout
        self.bootstrap_peers: set[ID] = set()
        self.rounds = 0
        self.done_first_round = trio.Event()
        self._known_ids: dict[str, ID] = {}  # "ip:port" -> peer id learned by probing
        # What the last round found per configured address ("does not resolve", "10.0.0.5:4001 refused ..."):
        # /readyz and the not-ready warning name them, so an unready node says why.
        self.outcomes: dict[str, str] = {}
        self._failed: dict[str, str] = {}
        self._last_warned = -WARN_EVERY

    async def dial_addr(self, addr: multiaddr.Multiaddr, peer_id: ID | None) -> ID | None:
        key = str(addr)
        if peer_id is None:
            peer_id = self._known_ids.get(key)
        if peer_id is not None and peer_id in self.host.get_connected_peers():
            return peer_id
        if peer_id == self.host.get_id():
            return None
        with trio.move_on_after(self.dial_timeout) as scope:
            try:
                if peer_id is None:
                    peer_id = await probe_peer_id(self.host, addr)
                    if peer_id == self.host.get_id():
                        return None  # our own address behind a shared name
                    self._known_ids[key] = peer_id
                # A bootstrap dial is deliberate and we just reached the address: py-libp2p's negative cache
                # would otherwise refuse it for 60 s after the peer was last unreachable (e.g. it restarted).
                self.host.get_network().unblock_peer(peer_id)  # type: ignore[attr-defined]
                await self.host.connect(PeerInfo(peer_id, [addr]))
                return peer_id
            except ProbeError as exc:
                metrics.DIAL_FAILURES.labels("probe").inc()
                self._failed[key] = str(exc)
                log.info("bootstrap %s: %s", addr, exc)
                note_probe_failure(self.host, addr, exc)  # names a PSK mismatch as one
            except Exception as exc:
                metrics.DIAL_FAILURES.labels("dial").inc()
                self._known_ids.pop(key, None)  # the pod behind this address may have a new identity
                self._failed[key] = f"dial failed: {exc}"
                log.info("bootstrap dial %s failed: %s", addr, exc)
        if scope.cancelled_caught:
            metrics.DIAL_FAILURES.labels("timeout").inc()
            self._failed[key] = f"no answer in {self.dial_timeout:g} s"
            log.info("bootstrap dial %s timed out after %.1fs", addr, self.dial_timeout)
            note_dial_timeout(self.host, addr, self.dial_timeout)  # in a private network: may be another PSK
        return None

    async def run_round(self) -> int:
        """Dial every address of every target, concurrently; return how many peers we reached."""
        self.rounds += 1
        metrics.BOOTSTRAP_ROUNDS.inc()
        reached: list[ID] = []
        self._failed = {}
        resolved: dict[str, list[multiaddr.Multiaddr]] = {}

        async def one(addr: multiaddr.Multiaddr, pid: ID | None) -> None:
            got = await self.dial_addr(addr, pid)
            if got is not None:
                reached.append(got)

        async with trio.open_nursery() as nursery:
            for target, text in zip(self.targets, self.texts):
                addrs = resolved[text] = await resolve(target)
                if not addrs:
                    log.info("bootstrap name %s does not resolve (yet)", target.host)
                for addr in addrs:
                    nursery.start_soon(one, addr, target.peer_id)
        self.bootstrap_peers.update(reached)
        self.outcomes = {text: self._describe(addrs) for text, addrs in resolved.items()}
        return len(reached)

    def _describe(self, addrs: list[multiaddr.Multiaddr]) -> str:
        """One configured address's result in the last round, for :meth:`not_ready_reason`."""
        if not addrs:
            return "does not resolve"
        failed = [f"{a}: {self._failed[str(a)]}" for a in addrs if str(a) in self._failed]
        if not failed:
            return "reached"
        return "; ".join(failed)

    def not_ready_reason(self) -> str:
        """Why no bootstrap peer is connected: every configured address with what the last round found."""
        if self.rounds == 0:
            return "first bootstrap round running; dialing " + ", ".join(self.texts)
        tried = ", ".join(f"{t} ({self.outcomes.get(t, 'not tried yet')})" for t in self.texts)
        return f"no bootstrap peer reachable after {self.rounds} round(s); tried {tried}"

    def _warn_unready(self) -> None:
        now = trio.current_time()
        if now - self._last_warned >= WARN_EVERY:
            self._last_warned = now
            log.warning("not ready: %s (p2p-node doctor --config <this config> checks each step)",
                        self.not_ready_reason())

    async def run(self) -> None:
        if not self.targets:
            self.done_first_round.set()
            return
        backoff = self.interval
        since_refresh, refresh_every = 0.0, REFRESH_EVERY
        while True:
            connected = set(self.host.get_connected_peers())
            need = not connected or (not (connected & self.bootstrap_peers) and since_refresh >= refresh_every
                                     and self.room())
            if need or self.rounds == 0:
                # Alone: the next refresh may be needed soon. Connected to others: less often each time.
                refresh_every = REFRESH_EVERY if not connected else min(REFRESH_MAX, 2 * refresh_every)
                n = await self.run_round()
                self.done_first_round.set()
                since_refresh = 0.0
                if n == 0 and not self.host.get_connected_peers():
                    self._warn_unready()
                    await trio.sleep(jittered(backoff))
                    backoff = min(MAX_BACKOFF, backoff * 2)
                    continue
                backoff = self.interval
            pause = jittered(self.interval)
            await trio.sleep(pause)
            since_refresh += pause
