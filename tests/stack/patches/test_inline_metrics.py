"""p2p_fast.stack.patches.inline_metrics: py-libp2p's own metric events are recorded where they are sent: no
consumer task, no channel that can fill up (stock first, in a process of its own: its dials block after 100
events with nobody reading; then patched)."""

from __future__ import annotations

import json
import subprocess
import sys

import trio
from libp2p.peer.peerinfo import PeerInfo
from prometheus_client import REGISTRY

from p2p_fast.core.config import load_config_text
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.patches.inline_metrics import InlineMetricSink

STOCK = """
import json, multiaddr, trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo
LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]

async def main():
    a = new_host(key_pair=create_new_key_pair(), enable_metrics=True)
    b = new_host(key_pair=create_new_key_pair(), enable_metrics=True)
    cycles = 0
    async with a.run(LISTEN), b.run(LISTEN):
        with trio.move_on_after(15):
            for _ in range(60):
                await b.connect(PeerInfo(a.get_id(), [a.get_addrs()[0]]))
                await b.get_network().close_peer(a.get_id())
                cycles += 1
    print(json.dumps({"cycles": cycles, "channel": type(a.get_network().metric_send_channel).__name__}))

trio.run(main)
"""


def test_stock_metric_channel_blocks_the_node_when_nobody_reads_it():
    out = subprocess.run([sys.executable, "-c", STOCK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["channel"] == "MemorySendChannel"
    assert doc["cycles"] < 60  # the 100-slot channel filled (2-5 events a cycle) and the next send blocked


def _swarm_events() -> float:
    """Every swarm event py-libp2p has counted so far (its counters carry a peer_id label: sum over all of them)."""
    return sum(s.value for m in REGISTRY.collect() if m.name.startswith("swarm_")
               for s in m.samples if s.name.endswith("_total"))


def test_libp2p_metric_events_are_recorded_inline_and_never_block(tmp_path):
    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
    a = build_host(cfg, load_or_create_identity(tmp_path / "a"))
    b = build_host(cfg, load_or_create_identity(tmp_path / "b"))
    # Every host of the process shares the one sink; the stock channel's receiving end is gone.
    assert a.get_network().metric_send_channel is b.get_network().metric_send_channel
    assert isinstance(a.get_network().metric_send_channel, InlineMetricSink)
    assert a.get_metrics_recv_channel() is None
    before = _swarm_events()

    async def main() -> None:
        async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
            # Far more events than the stock 100-slot channel holds, with nobody reading: nothing may block.
            # Each cycle counts a dial on b and an incoming connection on a.
            with trio.fail_after(60):
                for _ in range(60):
                    await b.connect(PeerInfo(a.get_id(), [a.get_addrs()[0]]))
                    await b.get_network().close_peer(a.get_id())

    trio.run(main)
    assert _swarm_events() - before >= 120


def test_a_failing_metric_handler_is_ignored():
    class Boom:
        pass

    calls: list[object] = []

    def explode(event: object) -> None:
        calls.append(event)
        raise RuntimeError("metrics bug")

    sink = InlineMetricSink({Boom: explode})

    async def main() -> None:
        await sink.send(Boom())
        await sink.send(object())  # an event type nobody records
        sink.send_nowait(Boom())

    trio.run(main)  # no exception escaped the sink
    assert len(calls) == 2 and all(isinstance(e, Boom) for e in calls)
