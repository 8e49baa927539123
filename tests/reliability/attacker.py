"""A hostile peer, run as its own process by the reliability tests: ``python attacker.py MODE NODE_ADDR ...``.

It is a plain py-libp2p host (a member of the network: it has the key when there is one), which speaks our
protocols by hand so that it can say what an honest node never would. Each mode prints one JSON line with what it
sent and what came back; the test then checks the node's side (its metrics, its gossip log, its ledger).

    gossip NODE TOPIC          forged, unsigned, wrong-sender and replayed gossip, then a valid message after them
    receipts NODE PROTO        as a submitter: real echo tasks, then replayed, forged and misaddressed receipts
    bad-fields NODE PROTO      task requests with NaN, infinite, negative and huge timeouts
    fuzz PROTO NODE N SEED     N generated frames (garbage, truncated, mutated, oversized, wrong types) on the task
                               protocol (PROTO=task), the blob protocol (blob) or GossipSub (meshsub)

Every loop is bounded, every wait has a deadline (``DEADLINE_S`` for the whole run).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from dataclasses import replace
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from p2p_fast._ext import encode_uvarint
from p2p_fast.protocols.codec import encode
from p2p_fast.protocols.messages import (BlobGet, BlobPut, BlobReply, CapabilityAdvertisement, GossipText,
                                        TaskCancel, TaskReceipt, TaskRequest, TaskResponse)
from p2p_fast.protocols.tasks.ledger import result_digest, sign_receipt
from p2p_fast.protocols.tasks.wire import FrameReader, frame

DEADLINE_S = 60.0
MESHSUB = "/meshsub/1.1.0"
MAX_FRAME = 1024 * 1024 + 64 * 1024  # a node's default tasks.max_payload_bytes + FRAME_OVERHEAD


def out(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


def _psk() -> str | None:
    return os.environ.get("P2P_PSK") or None


# -- gossip -------------------------------------------------------------------------------------------------------
class Forger:
    def __init__(self, key_pair: Any, topic: str) -> None:
        self.key = key_pair
        self.me = ID.from_pubkey(key_pair.public_key)
        self.topic = topic
        self.seq = int(time.time() * 1000)

    def message(self, data: bytes, *, from_id: bytes | None = None, sign: bool = True, key_field: bytes = b"",
                signature: bytes | None = None) -> rpc_pb2.Message:
        self.seq += 1
        msg = rpc_pb2.Message(from_id=from_id or self.me.to_bytes(), data=data, seqno=self.seq.to_bytes(8, "big"),
                              topicIDs=[self.topic])
        if sign:
            payload = PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString()
            msg.signature = signature if signature is not None else self.key.private_key.sign(payload)
            if key_field:
                msg.key = key_field
        return msg

    def text(self, text: str) -> bytes:
        return encode(GossipText(sender=str(self.me), text=text, sent_at=time.time()))


async def _write_rpc(stream: Any, rpc: rpc_pb2.RPC) -> None:
    body = rpc.SerializeToString()
    await stream.write(encode_uvarint(len(body)) + body)


async def mode_gossip(host: Any, node: Any, topic: str) -> dict[str, Any]:
    f = Forger(KEY_PAIR, topic)
    stream = await host.new_stream(node.peer_id, [MESHSUB])
    await _write_rpc(stream, rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic)]))
    await trio.sleep(0.5)
    sent: dict[str, int] = {}

    async def send(kind: str, msg: rpc_pb2.Message) -> None:
        await _write_rpc(stream, rpc_pb2.RPC(publish=[msg]))
        sent[kind] = sent.get(kind, 0) + 1
        await trio.sleep(0.05)

    valid = f.message(f.text("attacker-valid-1"))
    await send("valid", valid)
    await trio.sleep(0.5)
    await send("replay", valid)  # the very same message again: the seen cache drops it
    victim = ID.from_pubkey(create_new_key_pair().public_key)  # an Ed25519 ID: its key is inlined
    # A sender ID whose key is not inlined (sha2-256 multihash), with the attacker's key in msg.key: not its key.
    hashed = ID(b"\x12\x20" + hashlib.sha256(os.urandom(32)).digest())
    for i in range(2):
        await send("unsigned", f.message(f.text(f"attacker-unsigned-{i}"), sign=False))
        await send("wrong-sender", f.message(f.text(f"attacker-wrong-key-{i}"), from_id=hashed.to_bytes(),
                                             key_field=KEY_PAIR.public_key.serialize()))
        await send("bad-signature", f.message(f.text(f"attacker-forged-from-{i}"), from_id=victim.to_bytes()))
        await send("bad-signature", f.message(f.text(f"attacker-garbage-sig-{i}"), signature=os.urandom(64)))
    await trio.sleep(0.3)
    # Properly signed, but from a peer whose score its invalid messages sank below the publish threshold.
    await send("valid-after-invalid", f.message(f.text("attacker-valid-2")))
    await trio.sleep(1.0)
    await stream.reset()
    return {"sent": sent, "delivered_expected": ["attacker-valid-1"], "refused_by_score": "attacker-valid-2"}


# -- receipts -----------------------------------------------------------------------------------------------------
async def _responses(reader: FrameReader, n: int) -> list[TaskResponse]:
    got: list[TaskResponse] = []
    with trio.fail_after(20):
        while len(got) < n:
            for raw in await reader.read_frames():
                msg = reader.decode(raw)
                if isinstance(msg, TaskResponse):
                    got.append(msg)
    return got


async def mode_receipts(host: Any, node: Any, protocol: str) -> dict[str, Any]:
    me = str(host.get_id())
    worker = str(node.peer_id)
    stream = await host.new_stream(node.peer_id, [protocol])
    reader = FrameReader(stream, MAX_FRAME, "attacker")
    ids = [os.urandom(16).hex() for _ in range(3)]
    reqs = [TaskRequest(t, "echo", f"paid-{i}".encode(), me, 1, 5, 5.0, 0, time.time()) for i, t in enumerate(ids)]
    await stream.write(b"".join(frame(r, MAX_FRAME) for r in reqs))
    resps = {r.task_id: r for r in await _responses(reader, len(reqs))}
    assert all(resps[t].status == 0 for t in ids), resps
    key = host.get_private_key()

    def receipt(task_id: str, **kw: Any) -> TaskReceipt:
        base = dict(task_id=task_id, attempt=1, submitter=me, worker=worker, reward=5,
                    result_digest=resps[task_id].result_digest, issued_at=time.time(), signature=b"")
        base.update(kw)
        return TaskReceipt(**base)  # type: ignore[arg-type]

    good = sign_receipt(receipt(ids[0]), key)
    other = ID.from_pubkey(create_new_key_pair().public_key)
    frames = [
        good, good, good,  # the real receipt, then two replays: one credit
        replace(sign_receipt(receipt(ids[1]), key), reward=10**9),  # tampered with after signing
        receipt(ids[1], signature=os.urandom(64)),  # a forged signature
        sign_receipt(receipt(ids[2], submitter=str(other)), key),  # names another submitter than the stream's
        sign_receipt(receipt(ids[2], worker=str(other)), key),  # credits another worker
    ]
    await stream.write(b"".join(frame(m, MAX_FRAME) for m in frames))
    # One more real task: the stream still serves after all that.
    last = TaskRequest(os.urandom(16).hex(), "echo", b"still-serving", me, 1, 1, 5.0, 0, time.time())
    await stream.write(frame(last, MAX_FRAME))
    (resp,) = await _responses(reader, 1)
    await stream.reset()
    return {"tasks": ids, "paid_task": ids[0], "receipts_sent": len(frames), "replays": 2, "forged": 2,
            "misaddressed": 2, "still_serving": resp.status == 0 and resp.result == b"still-serving"}


async def mode_bad_fields(host: Any, node: Any, protocol: str) -> dict[str, Any]:
    """Task requests whose fields no honest submitter sends (a NaN timeout once stopped a worker)."""
    me = str(host.get_id())
    stream = await host.new_stream(node.peer_id, [protocol])
    reader = FrameReader(stream, MAX_FRAME, "attacker")
    bad = [(t, timeout) for t in ("sleep", "echo", "compute") for timeout in
           (float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e308)]
    reqs = [TaskRequest(f"{i:032x}", t, b"0.01", me, 1, 0, timeout, 0, 0.0) for i, (t, timeout) in enumerate(bad)]
    reqs.append(TaskRequest("f" * 32, "echo", b"fine", me, 1, 0, 5.0, 0, 0.0))
    await stream.write(b"".join(frame(r, MAX_FRAME) for r in reqs))
    resps = {r.task_id: r for r in await _responses(reader, len(reqs))}
    await stream.reset()
    return {"sent": len(reqs), "rejected": sum(1 for r in resps.values() if r.status == 2),
            "last_ok": resps["f" * 32].status == 0 and resps["f" * 32].result == b"fine"}


# -- fuzzing ------------------------------------------------------------------------------------------------------
def _random_message(rng: random.Random, me: str) -> Any:
    s = lambda n=12: "".join(rng.choice("abcdef0123456789") for _ in range(rng.randint(0, n)))  # noqa: E731
    b = lambda n=64: rng.randbytes(rng.randint(0, n))  # noqa: E731
    u = lambda: rng.choice([0, 1, 2, 127, 128, 2**32, 2**63 - 1, rng.randint(0, 2**64 - 1)])  # noqa: E731
    fl = lambda: rng.choice([0.0, -1.0, 1e308, float("inf"), float("nan"), rng.random() * 100])  # noqa: E731
    kind = rng.randrange(11)
    if kind == 0:
        return TaskRequest(s(32), rng.choice(["echo", "sleep", "compute", "storage", "nope", s()]), b(),
                           rng.choice([me, s(52)]), u(), u(), fl(), u(), fl())
    if kind == 1:
        return TaskResponse(s(32), u(), s(), u(), s(), b(), s(64), fl())
    if kind == 2:
        return TaskReceipt(s(32), u(), rng.choice([me, s()]), s(), u(), s(64), fl(), b(64))
    if kind == 3:
        return TaskCancel(s(32), u(), s())
    if kind == 4:
        return BlobPut(s(64), b(256))
    if kind == 5:
        return BlobGet(s(64))
    if kind == 6:
        return BlobReply(s(64), u(), b(), s())
    if kind == 7:
        return GossipText(s(), s(40), fl())
    if kind == 8:  # with the optional fields set
        return CapabilityAdvertisement(s(), s(), [s()], u(), u(), u(), fl(), [], u(), fl(), fl())
    if kind == 9:
        return CapabilityAdvertisement(s(), s(), [s() for _ in range(rng.randint(0, 4))], u(), u(), u(), fl(),
                                       [s() for _ in range(rng.randint(0, 3))], u())
    return TaskRequest(s(32), "echo", b(), me, 1, 0, 1.0, 0, 0.0)


def _mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[rng.randrange(len(data)):]
        elif op == 2:
            data[rng.randrange(len(data) + 1):0] = rng.randbytes(rng.randint(1, 8))
        elif data:
            data[rng.randrange(len(data))] = rng.choice([0, 0x7F, 0x80, 0xFF])
    return bytes(data)


def codec_frames(rng: random.Random, me: str) -> tuple[bytes, str]:
    """One chunk to send on a codec-framed stream and what kind of input it is. ``oversized`` ends the stream."""
    kind = rng.choices(["valid", "garbage", "truncated", "mutated", "version", "empty", "oversized"],
                       [30, 20, 15, 20, 8, 5, 2])[0]
    if kind == "oversized":
        return encode_uvarint(64 * 1024 * 1024) + rng.randbytes(64), kind
    msg = _random_message(rng, me)
    try:
        body = encode(msg, max_size=MAX_FRAME)
    except (ValueError, OverflowError, TypeError):
        body = rng.randbytes(16)
    if kind == "garbage":
        body = rng.randbytes(rng.randint(0, 512))
    elif kind == "truncated":
        body = body[:rng.randrange(len(body))] if body else b""
    elif kind == "mutated":
        body = _mutate(rng, body)
    elif kind == "version":
        body = bytes([rng.choice([0, 1, 9, 255])]) + body[1:]  # 1: the format before protobuf
    elif kind == "empty":
        body = b""
    return encode_uvarint(len(body)) + body, kind


def rpc_frames(rng: random.Random, topic: str, key_pair: Any) -> tuple[bytes, str]:
    kind = rng.choices(["valid-rpc", "garbage", "mutated", "oversized", "control"], [30, 25, 30, 3, 12])[0]
    f = Forger(key_pair, topic)
    if kind == "oversized":
        return encode_uvarint(64 * 1024 * 1024) + rng.randbytes(64), kind
    rpc = rpc_pb2.RPC(publish=[f.message(rng.randbytes(rng.randint(0, 200)), sign=rng.random() < 0.5)])
    if kind == "control":
        rpc = rpc_pb2.RPC(control=rpc_pb2.ControlMessage(
            ihave=[rpc_pb2.ControlIHave(topicID=topic, messageIDs=[rng.randbytes(8) for _ in range(50)])],
            iwant=[rpc_pb2.ControlIWant(messageIDs=[rng.randbytes(8) for _ in range(50)])],
            graft=[rpc_pb2.ControlGraft(topicID=topic)], prune=[rpc_pb2.ControlPrune(topicID=topic)]))
    body = rpc.SerializeToString()
    if kind == "garbage":
        body = rng.randbytes(rng.randint(0, 512))
    elif kind == "mutated":
        body = _mutate(rng, body)
    return encode_uvarint(len(body)) + body, kind


async def _drain(stream: Any, counts: dict[str, int]) -> None:
    try:
        while True:
            data = await stream.read(65536)
            if not data:
                return
            counts["bytes_back"] = counts.get("bytes_back", 0) + len(data)
    except Exception:
        return


async def mode_fuzz(host: Any, node: Any, proto: str, n: int, seed: int, topic: str) -> dict[str, Any]:
    rng = random.Random(seed)
    me = str(host.get_id())
    protocol = {"meshsub": MESHSUB}.get(proto, proto)
    counts: dict[str, int] = {"frames": 0, "streams": 0, "closed_by_node": 0}
    kinds: dict[str, int] = {}
    sent = 0
    while sent < n:
        try:
            stream = await host.new_stream(node.peer_id, [protocol])
        except Exception as exc:
            counts["open_failures"] = counts.get("open_failures", 0) + 1
            if counts["open_failures"] > 20:
                raise RuntimeError(f"the node stopped accepting {protocol} streams: {exc}") from None
            await trio.sleep(0.2)
            continue
        counts["streams"] += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, stream, counts)
            batch = []
            # The blob protocol serves one request per stream: one frame each, so that every frame is read.
            for _ in range(1 if proto.endswith("/blob/1.0.0") else rng.randint(5, 60)):
                if sent >= n:
                    break
                chunk, kind = rpc_frames(rng, topic, KEY_PAIR) if proto == "meshsub" else codec_frames(rng, me)
                batch.append(chunk)
                kinds[kind] = kinds.get(kind, 0) + 1
                sent += 1
                if kind == "oversized":
                    break  # framing is broken after this: the node must close the stream
            try:
                await stream.write(b"".join(batch))
            except Exception:
                counts["closed_by_node"] += 1
            await trio.sleep(0.01 if len(batch) == 1 else 0.15)  # let the node answer what it will
            nursery.cancel_scope.cancel()
        try:
            await stream.reset()
        except Exception:
            pass
    counts["frames"] = sent
    # The node still serves the protocol after all that.
    alive = await _still_serves(host, node, proto, me)
    return {"counts": counts, "kinds": kinds, "still_serving": alive}


async def _still_serves(host: Any, node: Any, proto: str, me: str) -> bool:
    if proto == "meshsub":
        stream = await host.new_stream(node.peer_id, [MESHSUB])
        await stream.reset()
        return True
    stream = await host.new_stream(node.peer_id, [proto])
    reader = FrameReader(stream, MAX_FRAME, "attacker")
    if proto.endswith("/task/1.0.0"):
        await stream.write(frame(TaskRequest(os.urandom(16).hex(), "echo", b"ok", me, 1, 0, 5.0, 0, 0.0), MAX_FRAME))
        (resp,) = await _responses(reader, 1)
        ok = resp.status == 0 and resp.result == b"ok" and resp.result_digest == result_digest(b"ok")
    else:
        await stream.write(frame(BlobGet("0" * 64), MAX_FRAME))
        ok = False
        with trio.fail_after(10):
            for raw in await reader.read_frames():
                ok = isinstance(reader.decode(raw), BlobReply)
    await stream.reset()
    return ok


KEY_PAIR = create_new_key_pair()


async def main(argv: list[str]) -> None:
    mode, target = argv[0], argv[1]
    host = new_host(key_pair=KEY_PAIR, psk=_psk())
    with trio.fail_after(DEADLINE_S):
        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            node = info_from_p2p_addr(multiaddr.Multiaddr(target))
            await host.connect(node)
            try:
                if mode == "gossip":
                    out(await mode_gossip(host, node, argv[2]))
                elif mode == "receipts":
                    out(await mode_receipts(host, node, argv[2]))
                elif mode == "bad-fields":
                    out(await mode_bad_fields(host, node, argv[2]))
                elif mode == "fuzz":
                    proto, n, seed = argv[2], int(argv[3]), int(argv[4])
                    topic = argv[5] if len(argv) > 5 else "p2p-network/gossip"
                    out(await mode_fuzz(host, node, proto, n, seed, topic))
                else:
                    raise SystemExit(f"unknown mode {mode}")
            finally:
                await host.disconnect(node.peer_id)


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
