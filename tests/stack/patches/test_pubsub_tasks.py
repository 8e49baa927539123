"""Received gossip is handled in plain trio tasks (p2p_fast.stack.patches.pubsub_tasks): every message still arrives, none goes
through py-libp2p's service-task machinery, and a message whose handling raises is dropped alone."""

from __future__ import annotations

import types
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import trio
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core.config import load_config_text
from p2p_fast.stack.pubsub import Gossip
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity
from p2p_fast.stack.patches.pubsub_tasks import spawn_pushes_in, stop_spawning_pushes

TOPIC = "push-tasks"


@asynccontextmanager
async def meshed_pair(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, Gossip, Gossip, list[bytes]]]:
    """Two running hosts with Gossip, B subscribed (what it receives goes to the list), A meshed with B on TOPIC.
    A disconnects from B before the swarms stop, so no socket is left for the collector."""
    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
    a = build_host(cfg, load_or_create_identity(tmp_path / "a"))
    b = build_host(cfg, load_or_create_identity(tmp_path / "b"))
    got: list[bytes] = []
    async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
        ga, gb = Gossip(a, cfg), Gossip(b, cfg)
        async with ga.running(), gb.running():
            await ga.subscribe(TOPIC, lambda s, d: None)
            await gb.subscribe(TOPIC, lambda s, d: got.append(d))
            await a.connect(PeerInfo(b.get_id(), [b.get_addrs()[0]]))
            with trio.fail_after(10):
                while b.get_id() not in ga.router.mesh.get(TOPIC, set()):
                    await trio.sleep(0.02)
            yield a, b, ga, gb, got
            await a.disconnect(b.get_id())


def test_received_messages_run_in_plain_tasks_and_a_failing_one_is_dropped_alone(tmp_path):
    async def main() -> dict:
        async with meshed_pair(tmp_path) as (a, b, ga, gb, got):
            real_manager = gb.push_tasks._manager
            service_tasks_before = real_manager._total_task_count

            stock_push = type(gb.pubsub).push_msg

            async def exploding_push(self, forwarder, msg):
                if msg.data == b"boom":
                    raise ValueError("a bug in handling this one message")
                await stock_push(self, forwarder, msg)

            # B's instance only (A's Pubsub is of the same class and publishes through push_msg too)
            gb.pubsub.push_msg = types.MethodType(exploding_push, gb.pubsub)
            gb.push_tasks._push_func = exploding_push
            try:
                payloads = [f"m{i}".encode() for i in range(200)]
                for p in payloads[:100]:
                    await ga.publish(TOPIC, p)
                await ga.publish(TOPIC, b"boom")
                for p in payloads[100:]:
                    await ga.publish(TOPIC, p)
                with trio.fail_after(20):
                    while not set(payloads) <= set(got):
                        await trio.sleep(0.02)
            finally:
                del gb.pubsub.push_msg
            return {"got": got, "handled": gb.push_tasks.handled, "failed": gb.push_tasks.failed,
                    "service_tasks": real_manager._total_task_count - service_tasks_before,
                    "running": real_manager.is_running}

    out = trio.run(main)
    assert b"boom" not in out["got"] and len(out["got"]) == 200
    assert out["handled"] >= 200 and out["failed"] == 1
    assert out["service_tasks"] < 20, out["service_tasks"]  # heartbeats and the like, not one per message
    assert out["running"]


def test_stock_starts_a_service_task_per_message_patched_none(tmp_path):
    """The limit the patch lifts, on the same two running pubsubs: with the stock manager every received message
    becomes a py-libp2p service task; with ours, none does."""

    async def main() -> tuple[int, int]:
        async with meshed_pair(tmp_path) as (a, b, ga, gb, got):
            counts = []
            for patched in (False, True):
                if patched:
                    assert spawn_pushes_in(gb.pubsub, gb._nursery) is not None
                else:
                    stop_spawning_pushes(gb.pubsub)
                manager = gb.pubsub._manager
                real = getattr(manager, "_manager", manager)
                before = real._total_task_count
                payloads = [f"{patched}-{i}".encode() for i in range(100)]
                for p in payloads:
                    await ga.publish(TOPIC, p)
                with trio.fail_after(20):
                    while not set(payloads) <= set(got):
                        await trio.sleep(0.02)
                counts.append(real._total_task_count - before)
            return counts[0], counts[1]

    stock, ours = trio.run(main)
    assert stock >= 100, stock  # one service task (uuid name, parent lookup, cancel scope...) per message
    assert ours < 20, ours  # heartbeats and the like, not one per message
