"""The ``storage`` task type: put and get blobs, replicated on storage workers.

Payloads: ``put <bytes>`` stores the bytes under their sha256 (hex) and answers ``<key> replicas=<n>``;
``get <key>`` answers the bytes. The worker that runs a put keeps a copy and pushes ``tasks.storage_replicas - 1``
more to other live storage workers over ``/<protocol_version>/blob/1.0.0`` (one request and one reply per stream);
a get that misses locally asks the other storage workers. Only nodes that advertise ``storage`` ever hold a blob.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.core import metrics as node_metrics
from p2p_fast.core.multiaddrs import parse_multiaddrs
from p2p_fast.protocols.messages import BlobGet, BlobPut, BlobReply
from p2p_fast.protocols.tasks.builtins import InvalidPayload
from p2p_fast.protocols.tasks.ports import PeerDirectory
from p2p_fast.protocols.tasks.wire import FRAME_OVERHEAD, FrameReader, frame

log = logging.getLogger(__name__)
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
STORAGE = "storage"


async def _close_quietly(stream: Any) -> None:
    """Close a blob stream even when the caller was cancelled; a peer that is already gone is not an error."""
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await stream.close()
        except Exception:
            pass


class BlobStore:
    """Blobs as files under ``<data_dir>/blobs/ab/abcd...``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def count(self) -> int:
        if not self.root.exists():
            return 0
        return sum(1 for d in self.root.iterdir() if d.is_dir() for f in d.iterdir() if KEY_RE.match(f.name))


class Storage:
    def __init__(self, host: IHost, data_dir: Path, protocol: str, replicas: int, max_payload_bytes: int,
                 timeout: float, capabilities: Callable[[], Sequence[str]], book: PeerDirectory) -> None:
        self.host = host
        self.own_id = str(host.get_id())
        self.store = BlobStore(Path(data_dir) / "blobs")
        self.protocol = protocol
        self.replicas = replicas
        self.max_frame = max_payload_bytes + FRAME_OVERHEAD
        self.timeout = timeout
        self.capabilities = capabilities
        self.book = book

    @property
    def enabled(self) -> bool:
        return STORAGE in self.capabilities()

    def peers(self) -> list[str]:
        """The other live storage workers, in random order (spreads replicas and fetches)."""
        own = self.own_id
        peers = [r.peer_id for r in self.book.with_capability(STORAGE) if r.peer_id != own]
        random.shuffle(peers)
        return peers

    async def run(self, payload: bytes) -> bytes:
        verb, _, rest = payload.partition(b" ")
        if verb == b"put":
            key = self.store.put(rest)
            copies = 1
            if self.replicas > 1:
                copies += await self._replicate(key, rest, self.replicas - 1)
            return f"{key} replicas={copies}".encode()
        if verb == b"get":
            key = rest.decode(errors="replace").strip()
            if not KEY_RE.match(key):
                raise InvalidPayload("get needs a blob key: 64 lowercase hex digits")
            data = self.store.get(key)
            if data is None:
                data = await self._fetch(key)
            if data is None:
                raise LookupError(f"blob {key} is on no reachable storage worker")
            return data
        raise InvalidPayload("storage payload must be 'put <data>' or 'get <key>'")

    async def _replicate(self, key: str, data: bytes, wanted: int) -> int:
        done, failed = 0, []
        peers = self.peers()
        for peer in peers:
            if done >= wanted:
                break
            reply, why = await self._request(peer, BlobPut(key, data))
            if reply is not None and reply.status == 0:
                done += 1
            else:
                failed.append(f"{peer[-8:]}: {why if reply is None else f'status {reply.status}'}")
        if done < wanted:  # the put still succeeds with fewer copies; say why, the task's result says how many
            log.warning("blob %s: %d of %d extra replicas stored (%d live storage peers; %s)", key[:16], done, wanted,
                        len(peers), "; ".join(failed) or "none to ask")
        return done

    async def _fetch(self, key: str) -> bytes | None:
        return await self.fetch_from(self.peers(), key)

    async def fetch_from(self, peers: list[str], key: str) -> bytes | None:
        """The blob ``key`` from the first of ``peers`` that has it (checked against its sha256, then kept)."""
        for peer in peers:
            if peer == self.own_id:
                continue
            reply, _why = await self._request(peer, BlobGet(key))
            if reply is not None and reply.status == 0 and hashlib.sha256(reply.data).hexdigest() == key:
                self.store.put(reply.data)
                return reply.data
        return None

    async def _request(self, peer: str, msg: Any) -> tuple[BlobReply | None, str]:
        """The peer's reply, or None and why not."""
        host = self.host
        with trio.move_on_after(self.timeout):
            try:
                pid = ID.from_base58(peer)
                if not host.get_network().get_connections(pid):
                    # Not connected: dial where the live view says the peer is (the peerstore may know nothing
                    # of a peer this node never dialled or has forgotten), as the task links do.
                    rec = self.book.get(peer)
                    await host.connect(PeerInfo(pid, parse_multiaddrs(rec.addrs if rec is not None else ())))
                stream = await host.new_stream(pid, [self.protocol])
            except Exception as exc:
                log.debug("blob stream to %s failed: %s", peer, exc)
                return None, f"no stream: {type(exc).__name__}: {exc}"
            try:
                await stream.write(frame(msg, self.max_frame))
                reader = FrameReader(stream, self.max_frame, self.protocol)
                raw = (await reader.read_frames())[0]
                reply = reader.decode(raw)
                if isinstance(reply, BlobReply):
                    return reply, ""
                return None, f"answered with a {type(reply).__name__}"
            except Exception as exc:
                log.debug("blob request to %s failed: %s", peer, exc)
                return None, f"request failed: {type(exc).__name__}: {exc}"
            finally:
                await _close_quietly(stream)
        return None, f"no answer within {self.timeout:g} s"

    async def handle_stream(self, stream: Any) -> None:
        """Serve one BlobPut or BlobGet from another storage worker."""
        reader = FrameReader(stream, self.max_frame, self.protocol)
        try:
            with trio.move_on_after(self.timeout):
                raw = (await reader.read_frames())[0]
                msg = reader.decode(raw)
                if isinstance(msg, BlobPut):
                    if not self.enabled:
                        reply = BlobReply(msg.key, 2, b"", "not a storage worker")
                    elif hashlib.sha256(msg.data).hexdigest() != msg.key:
                        reply = BlobReply(msg.key, 2, b"", "key is not the sha256 of the data")
                    else:
                        self.store.put(msg.data)
                        reply = BlobReply(msg.key, 0, b"", "")
                elif isinstance(msg, BlobGet):
                    data = self.store.get(msg.key) if KEY_RE.match(msg.key) else None
                    reply = BlobReply(msg.key, 0, data, "") if data is not None else BlobReply(msg.key, 1, b"", "")
                else:
                    if msg is not None:  # an undecodable frame was counted by decode() already
                        node_metrics.MESSAGES_REJECTED.labels(self.protocol, "wrong-type").inc()
                    return
                await stream.write(frame(reply, self.max_frame))
        except Exception as exc:
            log.debug("blob stream failed: %s", exc)
        finally:
            await _close_quietly(stream)
