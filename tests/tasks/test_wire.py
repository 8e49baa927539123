"""The task stream under garbage: unknown format versions, unknown types, truncated and wrong messages, forged
receipts and an over-long frame. Each is rejected with a logged reason and a counter; the worker never crashes and
the same stream keeps serving until framing itself is broken."""

from __future__ import annotations

import re

import httpx
import multiaddr
import trio
from libp2p import new_host
from libp2p.peer.peerinfo import info_from_p2p_addr

from conftest import worker_config
from harness import Cluster, NodeProcess, node_config
from p2p_fast.protocols.codec import CODEC_VERSION, encode
from p2p_fast.protocols.messages import GossipText, TaskReceipt, TaskRequest, TaskResponse
from p2p_fast.protocols.tasks.wire import FrameReader, frame

PROTO = "/p2p-network/task/1.0.0"
MAX = 2 * 1024 * 1024


def _rejected(node: NodeProcess) -> dict[str, float]:
    text = httpx.get(node.http + "/metrics", timeout=5).text
    out = {}
    for m in re.finditer(r'p2p_messages_rejected_total\{reason="([^"]+)",topic="([^"]+)"\} ([0-9.e+]+)', text):
        if m.group(2) == PROTO:
            out[m.group(1)] = float(m.group(3))
    return out


def _raw(body: bytes) -> bytes:
    from p2p_fast._ext import encode_uvarint

    return encode_uvarint(len(body)) + body


def test_malformed_frames_are_rejected_counted_and_survived(cluster: Cluster) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))
    worker = cluster.start("w", worker_config(boot, ["compute"]))
    target = worker.addr()
    got: dict[str, object] = {}

    async def main() -> None:
        host = new_host()
        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            info = info_from_p2p_addr(multiaddr.Multiaddr(target))
            await host.connect(info)
            stream = await host.new_stream(info.peer_id, [PROTO])
            me = str(host.get_id())
            good = TaskRequest("a" * 32, "echo", b"still alive", me, 1, 1, 5.0, 0, 0.0)
            garbage = [
                _raw(b"\x09" + encode(good)[1:]),  # codec version 9
                _raw(bytes([CODEC_VERSION, 0xFE])),  # unknown message type
                _raw(encode(good)[:-5]),  # truncated
                _raw(b""),  # empty frame
                frame(GossipText("x", "not for this stream", 0.0), MAX),  # valid message, wrong stream
                frame(TaskRequest("b" * 32, "echo", b"x", "someone-else", 1, 1, 5.0, 0, 0.0), MAX),  # forged submitter
                frame(TaskReceipt("c" * 32, 1, me, str(info.peer_id), 10**6, "00", 0.0, b"bad sig"), MAX),
                frame(good, MAX),
            ]
            await stream.write(b"".join(garbage))
            reader = FrameReader(stream, MAX, "test")
            responses: list[TaskResponse] = []
            with trio.fail_after(10):
                while len(responses) < 2:
                    for raw in await reader.read_frames():
                        msg = reader.decode(raw)
                        assert isinstance(msg, TaskResponse)
                        responses.append(msg)
            got["responses"] = responses
            # A length prefix over the limit breaks framing: the worker closes the stream.
            await stream.write(b"\xff\xff\xff\xff\x0f")
            with trio.fail_after(10):
                try:
                    while True:
                        await reader.read_frames()
                except Exception as exc:
                    got["closed"] = type(exc).__name__
            await stream.reset()
            await host.disconnect(info.peer_id)  # stopping a swarm can leak its sockets (docs/libp2p-pitfalls.md, 6)

    trio.run(main)
    responses = {r.task_id[0]: r for r in got["responses"]}  # type: ignore[union-attr]
    assert responses["b"].status == 2 and "submitter" in responses["b"].error
    assert responses["a"].status == 0 and responses["a"].result == b"still alive"
    assert got["closed"] == "StreamClosed"
    counts = _rejected(worker)
    for reason in ("bad-version", "unknown-type", "truncated", "wrong-type", "wrong-submitter", "bad-frame"):
        assert counts.get(reason, 0) >= 1, (reason, counts)
    # No credit from the forged receipt; the worker still serves.
    ledger = httpx.get(worker.http + "/v1/ledger", timeout=5).json()
    assert ledger["earned"] == 0
    assert "receipt for" in worker.stderr() and "bad signature" in worker.stderr()
    assert "dropped a frame" in worker.stderr()
    assert httpx.get(worker.http + "/healthz", timeout=5).status_code == 200
