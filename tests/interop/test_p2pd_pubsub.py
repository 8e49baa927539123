"""Interop: a stock py-libp2p GossipSub host in this process <-> a go-libp2p peer (p2pd) driven by our harness.

Each case: connect (go dials py, or py dials go), both subscribe to ``p2p-network/interop``, py publishes and go must
receive the exact bytes, then go publishes and py must receive them. Gossipsub needs subscriptions and the mesh to
settle, so the publisher repeats (one message per 200 ms, at most 15 s) until the receiver has one; the assertions
are on the received content, origin, topic and signature.

Security: Noise, and TLS 1.3 (the py host offers only TLS; the daemon offers both). The muxer is Yamux.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.tls.transport import PROTOCOL_ID as TLS_PROTOCOL_ID
from libp2p.security.tls.transport import TLSTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from testing.interop import AsyncP2PDaemon, AsyncSubscription, ControlError, P2PDaemon
from testing.interop.p2pd import REPO_ROOT

TOPIC = "p2p-network/interop"
GOSSIP_PROTOCOLS = ["/meshsub/1.1.0", "/meshsub/1.0.0"]
PUBLISH_EVERY = 0.2  # s
PUBLISH_FOR = 15.0  # s
CASE_DEADLINE = 60.0  # s, a hard bound on one whole case
# Binary payloads, so a text/bytes mix-up anywhere on the path would show.
PY_PAYLOAD = b"py->go \x00\x01\xfe\xff " + bytes(range(256))
GO_PAYLOAD = b"go->py \xff\xfe\x00 " + bytes(range(255, -1, -1))


@asynccontextmanager
async def py_gossip_host(security: str):
    """A plain py-libp2p host: Ed25519, TCP on 127.0.0.1, only ``security`` (noise|tls), Yamux, GossipSub."""
    key_pair = create_new_key_pair()
    if security == "noise":
        sec_opt = {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)}
    else:
        sec_opt = {TLS_PROTOCOL_ID: TLSTransport(key_pair)}
    host = new_host(key_pair=key_pair, sec_opt=sec_opt, muxer_opt={YAMUX_PROTOCOL_ID: Yamux})
    gossipsub = GossipSub(
        protocols=GOSSIP_PROTOCOLS,
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, gossipsub)  # strict_signing=True (default), like go's StrictSign
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        async with background_trio_service(pubsub), background_trio_service(gossipsub):
            await pubsub.wait_until_ready()
            yield host, pubsub, gossipsub


async def _wait(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(interval)
        return
    raise AssertionError(f"{what} not reached within {timeout} s")


async def _py_to_go(pubsub: Pubsub, py_id: ID, go_sub: AsyncSubscription) -> tuple[int, float]:
    """py publishes PY_PAYLOAD every 200 ms until go has it. Returns (messages sent, seconds)."""
    start = trio.current_time()
    sent = 0
    with trio.move_on_after(PUBLISH_FOR):
        while True:
            await pubsub.publish(TOPIC, PY_PAYLOAD)
            sent += 1
            try:
                msg = await go_sub.get(PUBLISH_EVERY)
            except TimeoutError:
                continue
            assert msg.data == PY_PAYLOAD
            assert msg.from_peer == py_id.to_base58()
            assert msg.topics == (TOPIC,)
            assert msg.signature, "py-libp2p signs by default and go verifies strictly"
            return sent, trio.current_time() - start
    raise AssertionError(f"go received nothing from py in {PUBLISH_FOR} s ({sent} messages published)")


async def _go_to_py(go: AsyncP2PDaemon, py_sub, go_id: ID) -> tuple[int, float]:
    """go publishes GO_PAYLOAD every 200 ms until py has it. Returns (messages sent, seconds)."""
    start = trio.current_time()
    sent = 0
    with trio.move_on_after(PUBLISH_FOR):
        while True:
            await go.publish(TOPIC, GO_PAYLOAD)
            sent += 1
            with trio.move_on_after(PUBLISH_EVERY):
                while True:
                    msg = await py_sub.get()
                    if msg.from_id == go_id.to_bytes():
                        break
                    # py delivers its own earlier publications to its own subscription too: skip those
                    assert msg.data == PY_PAYLOAD
                assert msg.data == GO_PAYLOAD
                assert list(msg.topicIDs) == [TOPIC]
                assert msg.signature, "go signs by default (StrictSign) and py verifies strictly"
                return sent, trio.current_time() - start
    raise AssertionError(f"py received nothing from go in {PUBLISH_FOR} s ({sent} messages published)")


async def _exchange(p2pd_binary: str, security: str, go_dials: bool) -> dict[str, float]:
    timings: dict[str, float] = {}
    t0 = trio.current_time()
    with trio.fail_after(CASE_DEADLINE):
        async with py_gossip_host(security) as (host, pubsub, gossipsub):
            py_id = host.get_id()
            py_addr = f"{host.get_addrs()[0]}"
            async with AsyncP2PDaemon(p2pd_binary, security=("noise", "tls")) as go:
                go_id = ID.from_base58(go.peer_id)
                assert go.addrs and all(a.startswith("/ip4/127.0.0.1/tcp/") for a in go.addrs)
                timings["start"] = trio.current_time() - t0

                py_sub = await pubsub.subscribe(TOPIC)
                go_sub = await go.subscribe(TOPIC)
                assert TOPIC in await go.topics()

                t = trio.current_time()
                if go_dials:
                    await go.connect(py_addr)  # "/ip4/.../tcp/N/p2p/<py id>"
                else:
                    await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(go.p2p_addrs[0])))
                await go.wait_for_peer(py_id, timeout=10)
                await _wait(lambda: go_id in host.get_network().connections, 10, "py sees the go connection")
                timings["connect"] = trio.current_time() - t

                (conn,) = host.get_network().get_connections(go_id)
                expected_sec = NOISE_PROTOCOL_ID if security == "noise" else TLS_PROTOCOL_ID
                assert conn.get_negotiated_security_protocol() == expected_sec
                assert conn.get_negotiated_muxer_protocol() == YAMUX_PROTOCOL_ID
                assert [p.peer_id for p in await go.peers()] == [py_id.to_base58()]

                # Both sides see each other's subscription, over meshsub 1.1.
                await go.wait_for_topic_peer(TOPIC, py_id, timeout=10)
                await _wait(lambda: go_id in pubsub.peer_topics.get(TOPIC, set()), 10, "py sees go's subscription")
                assert gossipsub.peer_protocol.get(go_id) == "/meshsub/1.1.0"

                timings["py_to_go_msgs"], timings["py_to_go"] = await _py_to_go(pubsub, py_id, go_sub)
                timings["go_to_py_msgs"], timings["go_to_py"] = await _go_to_py(go, py_sub, go_id)

                proc = go.sync.proc
            assert proc.returncode == 0, f"p2pd did not exit cleanly ({proc.returncode}):\n{go.sync.log_text}"
    timings["total"] = trio.current_time() - t0
    return timings


@pytest.mark.parametrize("security", ["noise", "tls"])
@pytest.mark.parametrize("go_dials", [True, False], ids=["go_dials_py", "py_dials_go"])
def test_gossip_both_ways(p2pd_binary: str, security: str, go_dials: bool) -> None:
    timings = trio.run(_exchange, p2pd_binary, security, go_dials)
    print(f"{security} {'go->py dial' if go_dials else 'py->go dial'}: " +
          ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in timings.items()))


def test_daemon_to_daemon(p2pd_binary: str) -> None:
    """The harness alone (go <-> go): CONNECT, LIST_PEERS, GET_TOPICS, pubsub both ways, DISCONNECT, errors, stop."""
    with P2PDaemon(p2pd_binary, security=("tls",)) as a, P2PDaemon(p2pd_binary, security=("noise", "tls")) as b:
        assert a.peer_id != b.peer_id
        with P2PDaemon(p2pd_binary, security=("noise",)) as c:  # no security protocol in common with a
            with pytest.raises(ControlError, match="security protocol"):
                c.connect(a.p2p_addrs[0], timeout=5)
        sub_a, sub_b = a.subscribe(TOPIC), b.subscribe(TOPIC)
        a.connect(b.addrs[0], b.peer_id)
        assert a.peer_ids() == {b.peer_id}
        b.wait_for_peer(a.peer_id)
        b.wait_for_topic_peer(TOPIC, a.peer_id)
        a.wait_for_topic_peer(TOPIC, b.peer_id)
        assert a.topics() == [TOPIC]
        for pub, sub, payload in ((a, sub_b, b"a->b \x00"), (b, sub_a, b"b->a \xff")):
            deadline = time.monotonic() + PUBLISH_FOR
            while True:
                pub.publish(TOPIC, payload)
                try:
                    msg = sub.wait_for(lambda m, p=pub: m.from_peer == p.peer_id, PUBLISH_EVERY)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "no gossip between the daemons"
            assert msg.data == payload
        a.disconnect(b.peer_id)
        a.wait_until(lambda: not a.peer_ids(), 10, "disconnect")
        sub_a.close()
        assert sub_a.closed
    assert a.returncode == 0 and b.returncode == 0
    assert a.proc is None and b.proc is None


def test_daemon_dies_with_its_driver(p2pd_binary: str, tmp_path) -> None:
    """If the test process is killed, the daemon exits by itself (persistent connection + -idleTimeout)."""
    code = (
        "import os, sys\n"
        "from testing.interop import P2PDaemon\n"
        "d = P2PDaemon(sys.argv[1]).start()\n"
        "print(d.proc.pid, d.workdir, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, p2pd_binary], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == -9, proc.stderr
    pid_text, workdir = proc.stdout.split()
    pid = int(pid_text)

    def alive() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
        except FileNotFoundError:
            return False

    try:
        deadline = time.monotonic() + 10
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive():
            os.kill(pid, 9)
            pytest.fail("p2pd outlived its driver by more than 10 s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the killed driver could not remove it
