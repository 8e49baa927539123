"""Each py-libp2p work-around in p2p_fast/stack/patches/libp2p_fixes.py, with the bug it works around shown first."""

from __future__ import annotations

import trio
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.stack.patches import libp2p_fixes
from p2p_fast.core.config import load_config_text
from p2p_fast.stack.host import build_host, listen_addrs
from p2p_fast.stack.identity import load_or_create_identity


async def _dial_seconds(tmp_path, tag: str) -> float:
    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
    a = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-a"))
    b = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-b"))
    async with a.run(listen_addrs=listen_addrs(cfg)), b.run(listen_addrs=listen_addrs(cfg)):
        start = trio.current_time()
        await b.connect(PeerInfo(a.get_id(), [a.get_addrs()[0]]))
        took = trio.current_time() - start
        assert a.get_id() in b.get_connected_peers()
        return took


def test_dial_no_longer_waits_for_the_happy_eyeballs_timer(tmp_path):
    async def main() -> tuple[float, float]:
        libp2p_fixes.undo()
        try:
            stock = await _dial_seconds(tmp_path, "stock")
        finally:
            libp2p_fixes.apply()
        fixed = await _dial_seconds(tmp_path, "fixed")
        return stock, fixed

    stock, fixed = trio.run(main)
    # The bug: a successful single-address dial still takes the full 250 ms fallback timer.
    assert stock >= libp2p_fixes.STOCK_HAPPY_EYEBALLS_DELAY
    # With the work-around the same dial is not held back by it.
    assert fixed < stock - 0.15, (stock, fixed)


def test_the_yamux_class_registered_in_muxer_opt_is_used():
    """Fix 2: ``new_host(muxer_opt={"/yamux/1.0.0": Subclass})`` builds ``Subclass`` connections."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID, Yamux

    class MyYamux(Yamux):
        pass

    async def muxer_types() -> set[type]:
        listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
        a = new_host(key_pair=create_new_key_pair(), muxer_opt={PROTOCOL_ID: MyYamux})
        b = new_host(key_pair=create_new_key_pair(), muxer_opt={PROTOCOL_ID: MyYamux})
        async with a.run(listen), b.run(listen):
            await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
            return {type(a.get_network().get_connections(b.get_id())[0].muxed_conn),
                    type(b.get_network().get_connections(a.get_id())[0].muxed_conn)}

    libp2p_fixes.undo_muxer_fix()
    try:
        stock = trio.run(muxer_types)
    finally:
        libp2p_fixes.apply_muxer_fix()
    # The bug: once Yamux is negotiated, py-libp2p builds its own class, whatever was registered.
    assert stock == {Yamux}
    assert trio.run(muxer_types) == {MyYamux}


def test_finding_a_tasks_parent_no_longer_walks_every_task():
    """Fix 3: ``TrioManager._find_parent_task`` gives the stock answer without walking the service's task tree."""
    from libp2p.tools.anyio_service import Service, background_trio_service
    from libp2p.tools.anyio_service.trio_tasks import FunctionTask

    answers: list[tuple[object, object]] = []
    walked: list[int] = []
    stock_iterate = FunctionTask.iterate_tasks.__func__  # type: ignore[attr-defined]

    def compare(manager) -> None:
        me = trio.lowlevel.current_task()
        answers.append((libp2p_fixes.STOCK_FIND_PARENT_TASK(manager, me), manager._find_parent_task(me)))

    class Svc(Service):
        async def run(self) -> None:
            release = trio.Event()

            async def idle() -> None:
                await release.wait()

            async def child() -> None:
                compare(self.manager)
                self.manager.run_task(grandchild)
                await release.wait()

            async def grandchild() -> None:
                compare(self.manager)
                await release.wait()

            for _ in range(900):  # a busy service: many tasks in flight (py-libp2p caps a parent at 1000)
                self.manager.run_task(idle)
            for _ in range(5):
                self.manager.run_task(child)
            await trio.sleep(0.2)
            compare(self.manager)  # the service's own run task

            async def foreign() -> None:  # a task that is not the service's (like a stream handler's)
                compare(self.manager)
                # count the tasks each lookup visits from here
                visited = 0

                def counting(cls, *tasks):
                    nonlocal visited
                    for t in stock_iterate(cls, *tasks):
                        visited += 1
                        yield t

                FunctionTask.iterate_tasks = classmethod(counting)
                try:
                    me = trio.lowlevel.current_task()
                    self.manager._find_parent_task(me)
                    walked.append(visited)
                    libp2p_fixes.STOCK_FIND_PARENT_TASK(self.manager, me)
                    walked.append(visited)
                finally:
                    FunctionTask.iterate_tasks = classmethod(stock_iterate)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(foreign)
            release.set()
            self.manager.cancel()

    async def main() -> None:
        async with background_trio_service(Svc()) as manager:
            await manager.wait_finished()

    trio.run(main)
    assert len(answers) == 12
    assert all(stock is ours for stock, ours in answers)
    # children, grandchildren and the service's run task are in the tree; the foreign task is not
    assert sum(1 for stock, _ in answers if stock is not None) == 11
    # The bug: one lookup from outside the tree visits every task; the indexed one visits none.
    assert walked[0] == 0 and walked[1] > 900


async def _forwarded_after_restart(tmp_path, tag: str, fixed: bool) -> bool:
    """A - B - C in a line. A publishes a burst, restarts with the same identity, publishes once more: does B still
    forward A's new message to C? (B delivers it locally either way; forwarding is what the bug breaks.)"""
    from libp2p.peer.peerinfo import PeerInfo as _PeerInfo

    from p2p_fast.stack.pubsub import Gossip

    topic = "seqno-restart"
    cfg = load_config_text("node: {listen_port: 0, listen_host: 127.0.0.1}\n")
    key_a = load_or_create_identity(tmp_path / f"{tag}-a")
    b = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-b"))
    c = build_host(cfg, load_or_create_identity(tmp_path / f"{tag}-c"))
    at_c: list[bytes] = []

    def gossip(host):
        g = Gossip(host, cfg)
        if not fixed:
            g.pubsub.counter = libp2p_fixes.stock_seqno_start()
        return g

    async def publish_as_a(payloads: list[bytes]) -> None:
        a = build_host(cfg, key_a)
        async with a.run(listen_addrs=listen_addrs(cfg)):
            ga = gossip(a)
            async with ga.running():
                await ga.subscribe(topic, lambda s, d: None)
                await a.connect(_PeerInfo(b.get_id(), [b.get_addrs()[0]]))
                with trio.fail_after(10):
                    while (a.get_id() not in gb.router.mesh.get(topic, set())
                           or b.get_id() not in ga.router.mesh.get(topic, set())):
                        await trio.sleep(0.02)
                for p in payloads:
                    await ga.publish(topic, p)
                with trio.move_on_after(5):
                    while not set(payloads) <= set(at_c):
                        await trio.sleep(0.02)
                # End this life cleanly: B must see A leave before A comes back (in one process, py-libp2p does
                # not close a stopped host's connections by itself).
                await a.get_network().close_peer(b.get_id())
                with trio.fail_after(10):
                    while a.get_id() in gb.pubsub.peers:
                        await trio.sleep(0.02)

    async with b.run(listen_addrs=listen_addrs(cfg)), c.run(listen_addrs=listen_addrs(cfg)):
        gb, gc = gossip(b), gossip(c)
        async with gb.running(), gc.running():
            await gb.subscribe(topic, lambda s, d: None)
            await gc.subscribe(topic, lambda s, d: at_c.append(d))
            await c.connect(_PeerInfo(b.get_id(), [b.get_addrs()[0]]))
            burst = [f"before-{i}".encode() for i in range(30)]
            await publish_as_a(burst)
            assert set(burst) <= set(at_c), "the burst before the restart must reach C"
            await publish_as_a([b"after-restart"])
            return b"after-restart" in at_c


def test_a_restarted_node_does_not_reuse_its_message_sequence_numbers(tmp_path):
    """Fix 4: py-libp2p starts a node's pubsub seqno counter at the current time in *seconds* and adds one per
    message. A node that published more messages than it lived seconds reuses its old seqnos after a restart with
    the same identity; peers take the new messages for equivocation (same from+seqno, other data), do not forward
    them and charge the node -100 in its peer score. Starting the counter at the time in nanoseconds (as
    go-libp2p does) keeps the seqnos of every life of a node distinct."""
    assert trio.run(_forwarded_after_restart, tmp_path, "stock", False) is False
    assert trio.run(_forwarded_after_restart, tmp_path, "fixed", True) is True


def test_a_handler_removed_during_negotiation_fails_the_stream_not_the_node():
    """Fix 5. The communicator is the stream side of multistream-select: it answers the handshake, asks for a
    protocol and, while the answer is being written (the await where it happens in a node: the DHT switching to
    client mode), the protocol's handler is removed."""
    from libp2p.protocol_muxer.exceptions import MultiselectError
    from libp2p.protocol_muxer.multiselect import MULTISELECT_PROTOCOL_ID, Multiselect

    proto = "/ipfs/kad/1.0.0"

    class Communicator:
        def __init__(self, muxer: Multiselect) -> None:
            self.muxer = muxer
            self.incoming = [MULTISELECT_PROTOCOL_ID, proto]

        async def read(self) -> str:
            await trio.lowlevel.checkpoint()
            return self.incoming.pop(0)

        async def write(self, msg: str) -> None:
            await trio.lowlevel.checkpoint()
            if msg == proto:
                self.muxer.remove_handler(proto)

    async def handler(stream) -> None:
        pass

    async def negotiate() -> str:
        muxer = Multiselect({proto: handler})
        try:
            await muxer.negotiate(Communicator(muxer))
        except MultiselectError:
            return "stream refused"
        except KeyError:
            return "KeyError"
        return "negotiated"

    libp2p_fixes.undo_negotiate_fix()
    try:
        assert trio.run(negotiate) == "KeyError"  # the stock bug: escapes and ends the swarm's stream task
    finally:
        libp2p_fixes.apply_negotiate_fix()
    assert trio.run(negotiate) == "stream refused"
