"""py-libp2p's own metric events are recorded where they are sent, not through a channel that needs a reader (a
per-instance patch: :func:`record_libp2p_metrics` takes the host; no undo, the host's stock receiving end is closed).

Upstream: ``libp2p/__init__.py``, ``new_host(enable_metrics=True)`` (py-libp2p 0.8.1) gives the swarm a 100-slot trio
channel (``metric_send_channel``) for every pubsub RPC, ping, DHT request and swarm event; ``send`` blocks when
nobody reads, so a consumer task must wake for each event: on a gossiping node one more task switch per RPC (6.5 %
of a subscriber's CPU in the profile of ``bench/RESULTS.md``), and without one the node stops after 100 events (a
limit; no upstream issue was found).

The patch replaces the swarm's ``metric_send_channel`` by :class:`InlineMetricSink`, which records each event
synchronously (a few counter increments, never blocking) into py-libp2p's own Prometheus collectors, and closes the
host's receive channel. Shown by ``tests/stack/patches/test_inline_metrics.py``.
"""

from __future__ import annotations

from typing import Any


class InlineMetricSink:
    """Stands in for py-libp2p's metric event channel and records each event where it is sent.

    py-libp2p sends a metric event on a 100-slot trio channel for every pubsub RPC, ping, DHT request and swarm event
    (its ``send`` blocks when nobody reads, so somebody must), and a consumer task wakes for each one: on a gossiping
    node that is one more task switch per RPC (6.5 % of a subscriber's CPU in the profile of ``bench/RESULTS.md``).
    Recording is a few counter increments, so it is done synchronously inside ``send``, which never blocks. A metrics
    bug must never take the node down: a failing handler is ignored.
    """

    def __init__(self, dispatch: dict[type, Any]) -> None:
        self._dispatch = dispatch

    async def send(self, event: Any) -> None:
        self.send_nowait(event)

    def send_nowait(self, event: Any) -> None:  # what a trio channel also offers
        handler = self._dispatch.get(type(event))
        if handler is not None:
            try:
                handler(event)
            except Exception:
                pass


_SINK: InlineMetricSink | None = None


def record_libp2p_metrics(host: Any) -> InlineMetricSink:
    """Record py-libp2p's own metrics (ping, gossipsub, kad-dht, swarm) into their Prometheus collectors inline.

    Call it before the host makes its first connection: connections and streams copy the swarm's channel when they
    are made. The collectors register in the default registry, once per process, so every host of a process shares
    one sink. The host's receive channel is closed: nothing is ever sent on it now.
    """
    global _SINK
    if _SINK is None:
        from libp2p.metrics.metrics import Metrics

        _SINK = InlineMetricSink(_dispatch_table(Metrics()))
    host.get_network().metric_send_channel = _SINK
    recv = getattr(host, "metric_recv_channel", None)
    if recv is not None:
        recv.close()
        host.metric_recv_channel = None
    return _SINK


def _dispatch_table(recorder: Any) -> dict[type, Any]:
    from libp2p.host.ping import PingEvent
    from libp2p.kad_dht.kad_dht import KadDhtEvent
    from libp2p.metrics.swarm import SwarmEvent
    from libp2p.pubsub.pubsub import GossipsubEvent

    return {
        PingEvent: recorder.ping.record,
        GossipsubEvent: recorder.gossipsub.record,
        KadDhtEvent: recorder.kad_dht.record,
        SwarmEvent: recorder.swarm.record,
    }
