"""Length-prefixed frames of codec messages on a libp2p stream, with batched writes.

A frame is ``uvarint(length) + codec message``. :class:`FrameReader` reads big chunks and splits them, so many small
frames cost one muxer read; :class:`FrameWriter` queues frames and one writer task sends everything queued in a
single ``stream.write`` (one Noise/Yamux frame for a burst of task requests or responses). Every frame is bounded:
an over-long length prefix closes the stream (framing cannot be trusted after it), while a frame that is the right
length but does not decode is dropped with a logged reason and a counter, and the stream goes on.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from p2p_fast.core import metrics
from p2p_fast.protocols.codec import DecodeError, Message, decode, encode
from p2p_fast._ext import FrameDecoder, encode_uvarint
from p2p_fast._ext import FrameError as ExtFrameError
from p2p_fast.stack.muxer import MAX_FRAME_PAYLOAD

log = logging.getLogger(__name__)
FRAME_OVERHEAD = 64 * 1024  # room for the fields around a payload of max_payload_bytes
# Task protocol versions: 1.1.0 is 1.0.0 plus one promise of the worker, that it verifies batch-signed receipts
# (ledger.sign_receipt_batch). Submitters ask for 1.1.0 first and sign one receipt at a time on 1.0.0 streams.
RECEIPT_BATCH_VERSION = "1.1.0"


def protocol_version(protocol: str, version: str) -> str:
    """``/<pv>/task/1.0.0`` -> ``/<pv>/task/<version>``."""
    return protocol.rsplit("/", 1)[0] + "/" + version


class FrameError(Exception):
    """The byte stream cannot be split into frames any more (oversized or corrupt length)."""


class StreamClosed(Exception):
    pass


class FrameReader:
    """Splits a stream into frames with the shared (compiled) ``FrameDecoder``."""

    def __init__(self, stream: Any, max_frame: int, label: str) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self.label = label
        self.decoder = FrameDecoder(max_frame)

    async def read_frames(self) -> list[bytes]:
        """At least one raw frame (more when several arrived together)."""
        while True:
            try:
                chunk = await self.stream.read(256 * 1024)
            except Exception as exc:  # StreamEOF, StreamReset, closed connection
                raise StreamClosed(type(exc).__name__) from None
            if not chunk:
                raise StreamClosed("EOF")
            try:
                frames = self.decoder.feed(chunk)
            except ExtFrameError as exc:
                raise FrameError(str(exc)) from None
            if frames:
                return frames

    def decode(self, frame: bytes) -> Message | None:
        """Decode one frame; a bad one is logged, counted and skipped (None)."""
        try:
            return decode(frame, max_size=self.max_frame)
        except DecodeError as exc:
            metrics.MESSAGES_REJECTED.labels(self.label, exc.reason).inc()
            log.warning("dropped a frame on %s: %s", self.label, exc)
            return None


def frame(msg: Message, max_frame: int) -> bytes:
    body = encode(msg, max_size=max_frame)
    return encode_uvarint(len(body)) + body


class FrameWriter:
    """Queue frames from any task; ``run`` (one task per stream) writes whatever is queued in one go."""

    def __init__(self, stream: Any, max_frame: int) -> None:
        self.stream = stream
        # Writes go to the muxed stream under a libp2p stream: ``NetStream.write`` only checks the stream's state
        # under a trio.Lock first, a scheduler round before every frame of a lone request went out (bench/RESULTS.md,
        # "Round trip: schedule points on the write path"). The muxer refuses a write on a closed or reset stream
        # itself, and ``run`` turns its error into StreamClosed like any other.
        self.out = getattr(stream, "muxed_stream", stream)
        self.max_frame = max_frame
        self.pending: list[bytes] = []
        self._wake = trio.Event()
        self.closed = False
        self.writing = False  # a write (the writer task's or a flush) is in progress
        self.failed: StreamClosed | None = None  # a flush's write failed: the writer task ends with it

    def send(self, msg: Message) -> None:
        if self.closed:
            raise StreamClosed("writer closed")
        self.pending.append(frame(msg, self.max_frame))
        self._wake.set()

    def send_raw(self, data: bytes) -> None:
        if self.closed:
            raise StreamClosed("writer closed")
        self.pending.append(data)
        self._wake.set()

    async def flush(self) -> None:
        """Write what is queued now, from the calling task, when the writer task is not writing and it fits one
        frame the muxer sends at once (its send window has room). Why: the writer task runs a scheduler round
        later, after every other runnable task of the node has had its step; a lone request waited that long
        (bench/RESULTS.md, "Round trip: the request written by the task that submitted it"). Shielded: once out of
        the queue the frames must reach the muxer whole, and a one-frame write is bounded by the muxer's own write
        timeout. A write that fails ends the writer task (``run``) as its own failure would; the caller goes on."""
        if self.writing or not self.pending or self.closed or self.failed is not None:
            return
        size = sum(map(len, self.pending))
        if size > min(getattr(self.out, "send_window", 0), MAX_FRAME_PAYLOAD):
            return  # the writer task's (it may wait for window)
        data = b"".join(self.pending)
        self.pending = []
        self.writing = True
        try:
            with trio.CancelScope(shield=True):
                await self.out.write(data)
        except Exception as exc:
            self.failed = StreamClosed(f"{type(exc).__name__}: {exc}")
            self._wake.set()
        finally:
            self.writing = False
            if self.pending:
                self._wake.set()  # queued while we wrote: the writer task's now

    async def run(self) -> None:
        """Write until cancelled or the stream fails (then ``closed`` is set and the exception ends the task)."""
        try:
            while True:
                if self.failed is not None:
                    raise self.failed
                if not self.pending or self.writing:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                # No extra yield before writing (it would cost every lone request a scheduler round): frames queued
                # while a write is in progress go out together in the next one.
                data = b"".join(self.pending)
                self.pending = []
                self.writing = True
                try:
                    await self.out.write(data)
                except Exception as exc:
                    raise StreamClosed(f"{type(exc).__name__}: {exc}") from None
                finally:
                    self.writing = False
        finally:
            self.closed = True
