#!/usr/bin/env python3
"""One benchmark peer in its own process, driven by ``gossip_bench.py`` over stdin/stdout (one JSON object a line).

    python bench/macro/peer.py --stack ours|stock|go

Stacks:

- ``ours``: the node's stack exactly as ``p2p_fast.app.node`` builds it: ``p2p_fast.stack.host.build_host`` (TCP,
  Noise, our Yamux, the py-libp2p work-arounds), ``p2p_fast.stack.pubsub.Gossip`` (GossipSub with our pubsub tuning)
  and our KadDHT.
- ``stock``: py-libp2p 0.8.1 as a new user configures it: ``new_host()`` defaults, GossipSub D=6/5/12, heartbeat
  1 s, spam protection off, signing on (``Pubsub`` defaults), a stock ``KadDHT``. This process never imports
  ``p2p_fast`` (nothing of it changes py-libp2p on import, and never importing it keeps that obvious).
- ``go``: a go-libp2p daemon (``p2pd``, gossipsub, heartbeat 1 s, strict signing, ``-dht``) driven through its
  control socket; the measured process (``pid`` in the ready line) is the daemon, not this driver.

Commands (each answered by one line ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``):
``connect {addr}``, ``subscribe {topic}``, ``topic_peers {topic}``, ``publish {topic, trial, count, rate, size}``,
``flood {topic, trial, seconds, size}`` (python stacks: as fast as the outbound queue takes them), ``stats {trial}`` (received count, latencies in s), ``dial {addr, n}`` (fresh dialer each time, seconds),
``quit``. Payload: trial (u64), seq (u32), send time (f64, ``time.monotonic()``, one clock for all local
processes), padding.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

HEADER = struct.Struct(">QId")
ROOT = Path(__file__).resolve().parent.parent.parent
TICK = 0.004  # s: the publisher sends what is due every tick, so high rates do not need one timer per message


def payload(trial: int, seq: int, size: int) -> bytes:
    head = HEADER.pack(trial, seq, time.monotonic())
    return head + b"\x00" * max(0, size - len(head))


class Received:
    """Per trial: (send time, arrival time) of each message that arrived (first copy of each seq only)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_trial: dict[int, dict[int, tuple[float, float]]] = {}

    def record(self, data: bytes) -> None:
        now = time.monotonic()
        if len(data) < HEADER.size:
            return
        trial, seq, sent = HEADER.unpack_from(data)
        with self.lock:
            self.by_trial.setdefault(trial, {}).setdefault(seq, (sent, now))

    def stats(self, trial: int) -> dict[str, Any]:
        """received, latencies (s), first send and last arrival (``time.monotonic()``)."""
        with self.lock:
            got = list(self.by_trial.get(trial, {}).values())
        return {
            "received": len(got),
            "latencies": [arrived - sent for sent, arrived in got],
            "first_sent": min((sent for sent, _ in got), default=None),
            "last_arrival": max((arrived for _, arrived in got), default=None),
        }


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- python stacks (trio) -----------------------------------------------------------------------------------------


def run_python(stack: str, data_dir: Path) -> None:
    import multiaddr
    import trio
    from libp2p.peer.peerinfo import info_from_p2p_addr

    received = Received()

    if stack == "ours":
        from p2p_fast.core.config import load_config_text
        from p2p_fast.stack.dht import build_dht
        from p2p_fast.stack.pubsub import Gossip
        from p2p_fast.stack.host import build_host
        from p2p_fast.stack.identity import load_or_create_identity
        from libp2p.kad_dht.kad_dht import DHTMode

        cfg = load_config_text(
            "node: {listen_port: 0, listen_host: 127.0.0.1}\n"
            "network: {security: [noise], enable_mdns: false}\n"
            "gossip: {heartbeat_interval: 1.0}\n"
        )

        def make_host():
            return build_host(cfg, load_or_create_identity(data_dir / f"id-{time.monotonic_ns()}"))

        def make_dht(host):
            return build_dht(host, DHTMode.SERVER)

        listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    else:
        from libp2p import new_host
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
        from libp2p.pubsub.gossipsub import GossipSub
        from libp2p.pubsub.pubsub import Pubsub

        def make_host():
            return new_host(key_pair=create_new_key_pair())

        def make_dht(host):
            return KadDHT(host, DHTMode.SERVER, enable_random_walk=False)

        listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]

    from libp2p.tools.anyio_service import background_trio_service

    # Count what py-libp2p drops silently (debug log only): outbound RPCs refused by a full per-peer queue.
    import libp2p.pubsub.gossipsub as _gs

    drops = [0]
    sub_fail = [0]
    _stock_drop = _gs.drop_rpc

    def _count_drop(peer_id, rpc):
        drops[0] += len(rpc.publish)
        _stock_drop(peer_id, rpc)

    _gs.drop_rpc = _count_drop

    async def main() -> None:
        host = make_host()
        async with host.run(listen_addrs=listen):
            from contextlib import AsyncExitStack

            async with AsyncExitStack() as stack_cm:
                if stack == "ours":
                    # build_host records py-libp2p's metric events inline, as the node does.
                    gossip = Gossip(host, cfg)
                    await stack_cm.enter_async_context(gossip.running())
                    pubsub = gossip.pubsub

                    async def publish(topic: str, data: bytes) -> None:
                        await gossip.publish(topic, data)

                    async def subscribe(topic: str) -> None:
                        await gossip.subscribe(topic, lambda _sender, data: received.record(data))
                else:
                    router = GossipSub(
                        protocols=["/meshsub/1.1.0", "/meshsub/1.0.0"],
                        degree=6, degree_low=5, degree_high=12,
                        heartbeat_interval=1, spam_protection_enabled=False,
                    )
                    pubsub = Pubsub(host, router)
                    await stack_cm.enter_async_context(background_trio_service(pubsub))
                    await stack_cm.enter_async_context(background_trio_service(router))
                    await pubsub.wait_until_ready()

                    async def publish(topic: str, data: bytes) -> None:
                        await pubsub.publish(topic, data)

                    async def subscribe(topic: str) -> None:
                        sub = await pubsub.subscribe(topic)

                        async def reader() -> None:
                            while True:
                                msg = await sub.get()
                                received.record(msg.data)

                        nursery.start_soon(reader)

                dht = make_dht(host)
                await stack_cm.enter_async_context(background_trio_service(dht))
                nursery = await stack_cm.enter_async_context(trio.open_nursery())
                addr = f"{host.get_addrs()[0]}"
                if "/p2p/" not in addr:
                    addr += f"/p2p/{host.get_id()}"
                emit({"event": "ready", "pid": os.getpid(), "peer_id": str(host.get_id()), "addr": addr})

                async def dial_once(target: str) -> float:
                    info = info_from_p2p_addr(multiaddr.Multiaddr(target))
                    dialer = make_host()
                    async with dialer.run(listen_addrs=listen):
                        start = time.perf_counter()
                        await dialer.connect(info)
                        took = time.perf_counter() - start
                        await dialer.disconnect(info.peer_id)
                    return took

                async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
                    op = cmd["cmd"]
                    if op == "connect":
                        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(cmd["addr"])))
                        return {}
                    if op == "subscribe":
                        await subscribe(cmd["topic"])
                        return {}
                    if op == "topic_peers":
                        router = pubsub.router
                        mesh = getattr(router, "mesh", {}).get(cmd["topic"], ())
                        return {"peers": len(pubsub.peer_topics.get(cmd["topic"], ())), "mesh": len(mesh)}
                    if op == "publish":
                        return await paced_publish(cmd)
                    if op == "flood":
                        return await flood(cmd)
                    if op == "stats":
                        return received.stats(cmd["trial"])
                    if op == "debug":
                        return {"drops": drops[0], "sub_fail": sub_fail[0]}
                    if op == "dial":
                        return {"seconds": [await dial_once(cmd["addr"]) for _ in range(cmd["n"])]}
                    raise ValueError(f"unknown command {op!r}")

                async def paced_publish(cmd: dict[str, Any]) -> dict[str, Any]:
                    topic, trial, count, rate, size = cmd["topic"], cmd["trial"], cmd["count"], cmd["rate"], cmd["size"]
                    start = trio.current_time()
                    sent = 0
                    while sent < count:
                        due = min(count, int((trio.current_time() - start) * rate) + 1)
                        while sent < due:
                            await publish(topic, payload(trial, sent, size))
                            sent += 1
                        await trio.sleep_until(start + sent / rate)
                    return {"sent": sent, "elapsed": trio.current_time() - start}

                async def flood(cmd: dict[str, Any]) -> dict[str, Any]:
                    """Publish as fast as the pipeline takes messages for ``seconds``: before each publish, wait
                    while a peer's outbound queue holds ``max_queue`` RPCs (py-libp2p drops at 32), so nothing is
                    dropped for want of queue space and the rate is what the two processes sustain."""
                    topic, trial, seconds, size = cmd["topic"], cmd["trial"], cmd["seconds"], cmd["size"]
                    max_queue = cmd.get("max_queue", 16)
                    queues = pubsub.peer_queues
                    start = trio.current_time()
                    deadline = start + seconds
                    sent = 0
                    while trio.current_time() < deadline:
                        while any(len(q) >= max_queue for q in queues.values()):
                            await trio.sleep(0.0005)
                        await publish(topic, payload(trial, sent, size))
                        sent += 1
                        if sent % 8 == 0:
                            await trio.lowlevel.checkpoint()
                    return {"sent": sent, "elapsed": trio.current_time() - start}

                send_lock = trio.Lock()
                while True:
                    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                    if not line:
                        break
                    cmd = json.loads(line)
                    if cmd["cmd"] == "quit":
                        emit({"ok": True})
                        break

                    async def run(cmd: dict[str, Any] = cmd) -> None:
                        try:
                            out = {"ok": True, **(await handle(cmd))}
                        except Exception as exc:  # reported to the driver, which fails the run
                            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                        async with send_lock:
                            emit(out)

                    # Commands run one at a time (the driver waits for each answer), but inside the nursery so
                    # the stdin thread never blocks the stack.
                    await run()
                nursery.cancel_scope.cancel()

    trio.run(main)


# -- go-libp2p daemon -----------------------------------------------------------------------------------------------


def run_go() -> None:
    sys.path.insert(0, str(ROOT))  # here, not at the top: the ``stock`` process must not import from the checkout
    from testing.interop import P2PDaemon

    received = Received()
    subs: list[Any] = []
    with P2PDaemon(security=("noise",), gossipsub_heartbeat=1.0, extra_args=["-dht"], idle_timeout=600) as go:
        emit({"event": "ready", "pid": go.proc.pid, "peer_id": go.peer_id, "addr": go.p2p_addrs[0]})

        def pump(sub: Any) -> None:
            while True:
                try:
                    msg = sub.get(timeout=3600)
                except Exception:
                    return
                received.record(msg.data)

        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd["cmd"]
            try:
                if op == "quit":
                    emit({"ok": True})
                    break
                if op == "connect":
                    go.connect(cmd["addr"])
                    out: dict[str, Any] = {}
                elif op == "subscribe":
                    sub = go.subscribe(cmd["topic"])
                    subs.append(sub)
                    threading.Thread(target=pump, args=(sub,), daemon=True).start()
                    out = {}
                elif op == "topic_peers":
                    n = len(go.pubsub_peers(cmd["topic"]))
                    out = {"peers": n, "mesh": n}
                elif op == "publish":
                    topic, trial, count, rate, size = (cmd["topic"], cmd["trial"], cmd["count"], cmd["rate"],
                                                       cmd["size"])
                    start = time.monotonic()
                    sent = 0
                    while sent < count:
                        due = min(count, int((time.monotonic() - start) * rate) + 1)
                        while sent < due:
                            go.publish(topic, payload(trial, sent, size))
                            sent += 1
                        delay = start + sent / rate - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    out = {"sent": sent, "elapsed": time.monotonic() - start}
                elif op == "stats":
                    out = received.stats(cmd["trial"])
                elif op == "dial":
                    seconds = []
                    for _ in range(cmd["n"]):
                        with P2PDaemon(security=("noise",), pubsub=False) as dialer:
                            start = time.perf_counter()
                            dialer.connect(cmd["addr"])
                            seconds.append(time.perf_counter() - start)
                    out = {"seconds": seconds}
                else:
                    raise ValueError(f"unknown command {op!r}")
                emit({"ok": True, **out})
            except Exception as exc:
                emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stack", choices=["ours", "stock", "go"], required=True)
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args()
    if args.stack == "go":
        run_go()
    else:
        if args.stack == "ours":
            sys.path.insert(0, str(ROOT))
        import tempfile

        with tempfile.TemporaryDirectory(prefix="p2pf-bench-") as tmp:
            run_python(args.stack, args.data_dir or Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
