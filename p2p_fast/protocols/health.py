"""Connection health: notice a connected peer that has gone silent and close its connection, without mistaking a
slow but live peer for a dead one.

Every ``interval`` (jittered) each connected peer is checked:

- **Traffic is an answer.** If stream data arrived from the peer since the last check (gossip, an answer, a
  task...), it is alive and is not pinged. Only data counts: the peer's muxer answers RTT pings, acknowledges
  streams and sends window updates on its own, and a connection whose other end no longer serves streams (seen in
  100-node join storms: a worker's only link, to a bootstrap, carried muxer frames but no stream for six minutes)
  would otherwise pass for alive forever. On a busy network almost nobody is pinged, which is
  also a cut in idle cost: a ping is a stream open, a negotiation and a round trip.
- Otherwise it is pinged, under ``timeout`` doubled for every consecutive miss (up to ``MAX_TIMEOUT_FACTOR``
  times), so a peer slowed down by CPU overload gets longer to answer each time.
- Only after ``MISSES_BEFORE_CLOSE`` consecutive misses (no traffic and no ping answer) is the connection closed,
  with a warning naming why and ``p2p_connections_pruned_total{reason="unresponsive"}``. Closing early under
  overload would make it worse: the peer redials and both redo the handshakes.

A dead peer therefore goes within about ``MISSES_BEFORE_CLOSE`` intervals plus the (growing) timeouts, instead of
holding a mesh slot until TCP notices, which can take many minutes.
"""

from __future__ import annotations

import logging
import random

import trio
from libp2p.abc import IHost
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.peer.id import ID

from p2p_fast.core import metrics

log = logging.getLogger(__name__)
MISSES_BEFORE_CLOSE = 3
MAX_TIMEOUT_FACTOR = 4


def frames_received(host: IHost, peer: ID) -> int | None:
    """Stream data frames received so far over all connections to ``peer`` (our muxer counts them), or None if
    unknown."""
    counts = frames_by_connection(host, peer)
    return sum(counts.values()) if counts else None


def frames_by_connection(host: IHost, peer: ID) -> dict[int, int]:
    """Stream data frames received on each live connection to ``peer``, by connection identity (only connections
    whose muxer counts them)."""
    counts = {}
    for conn in host.get_network().get_connections(peer):
        muxed = getattr(conn, "muxed_conn", None)
        count = getattr(muxed, "data_frames_received", None)
        if isinstance(count, int):
            counts[id(muxed)] = count
    return counts


class HealthMonitor:
    def __init__(self, host: IHost, interval: float, timeout: float) -> None:
        self.host = host
        self.interval = interval
        self.timeout = timeout
        self.rtt: dict[ID, float] = {}
        self.failures: dict[ID, int] = {}  # consecutive misses
        # data frames received from the peer at the last check, per connection: a redialled connection counts
        # from 0 again, so one total over the peer's connections would read its traffic as silence
        self.seen: dict[ID, dict[int, int]] = {}
        self.pings_sent = 0
        self.pings_skipped = 0

    async def ping_once(self, peer: ID, timeout: float | None = None) -> float | None:
        """One ping on a stream of its own, reset unless it completed.

        Not ``PingService.ping``: py-libp2p 0.8.1 caches its outbound ping stream per peer and forgets it only on
        an ``Exception``, and a timeout is a cancellation (a ``BaseException``), so after one timed-out ping every
        later ping reuses the stale stream: it reads the late answer to an earlier ping (a payload mismatch) or
        waits behind a handler that is still busy with it. Under overload, one slow answer thus turned into
        "failed 2 pings in a row" and a closed connection (tests/node/test_health_liveness.py shows it)."""
        start = trio.current_time()
        stream = None
        done = False
        try:
            with trio.move_on_after(self.timeout if timeout is None else timeout):
                try:
                    stream = await self.host.new_stream(peer, [PING_PROTOCOL])
                    await perform_ping_roundtrip(stream)
                    done = True
                except Exception as exc:
                    log.debug("ping %s failed: %s", peer, exc)
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    try:
                        await (stream.close() if done else stream.reset())
                    except Exception:
                        pass
        if not done:
            return None
        rtt = trio.current_time() - start
        self.rtt[peer] = rtt
        metrics.PING_RTT.observe(rtt)
        return rtt

    def heard_from(self, peer: ID) -> bool:
        """Whether the peer sent anything since the last check (and remember where its counter stands)."""
        counts = frames_by_connection(self.host, peer)
        if not counts:
            return False
        before = self.seen.get(peer)
        self.seen[peer] = counts
        # a count that moved either way: more frames, or another connection under a reused identity
        return before is not None and any(n != before.get(conn, 0) for conn, n in counts.items())

    async def _check(self, peer: ID) -> None:
        if self.heard_from(peer):
            self.pings_skipped += 1
            metrics.LIVENESS_CHECKS.labels("traffic").inc()
            self.failures.pop(peer, None)
            return
        misses = self.failures.get(peer, 0)
        timeout = self.timeout * min(MAX_TIMEOUT_FACTOR, 2 ** misses)
        self.pings_sent += 1
        metrics.LIVENESS_CHECKS.labels("ping").inc()
        answered = await self.ping_once(peer, timeout) is not None
        # Frames the ping itself provoked (the peer's muxer acknowledging the stream) are not liveness of the peer's
        # application: count traffic afresh from here.
        self.heard_from(peer)
        if answered:
            self.failures.pop(peer, None)
            return
        metrics.PING_FAILURES.inc()
        n = self.failures[peer] = misses + 1
        if n < MISSES_BEFORE_CLOSE:
            log.info("peer %s sent nothing and did not answer a ping within %.1fs (%d in a row)", peer, timeout, n)
            return
        log.warning("peer %s sent nothing and answered no ping %d times in a row (last timeout %.1fs); closing its "
                    "connection as unresponsive", peer, n, timeout)
        self.failures.pop(peer, None)
        self.rtt.pop(peer, None)
        self.seen.pop(peer, None)
        metrics.CONNECTIONS_PRUNED.labels("unresponsive").inc()
        try:
            await self.host.get_network().close_peer(peer)
        except Exception as exc:
            log.debug("closing %s failed: %s", peer, exc)

    async def run(self) -> None:
        await trio.sleep(min(1.0, self.interval) * random.uniform(0.5, 1.0))
        while True:
            peers = list(self.host.get_connected_peers())
            for table in (self.rtt, self.failures, self.seen):
                for gone in set(table) - set(peers):
                    table.pop(gone, None)
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(self._check, peer)
            await trio.sleep(self.interval * random.uniform(0.8, 1.2))
