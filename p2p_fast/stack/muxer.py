"""Stream multiplexer: our Yamux, registered through py-libp2p's ``muxer_opt`` hook under ``/yamux/1.0.0``.

:class:`FastYamux` / :class:`FastYamuxStream` subclass py-libp2p's ``Yamux`` / ``YamuxStream`` and keep their
state (``streams``, ``stream_buffers``, ``stream_events``, windows, the backlog semaphore), so the inherited
connection and stream close/reset, stale-stream sweeping and RTT pings work unchanged. What we replace is the data
path, where stock py-libp2p 0.8.1 spends most of a gossip message's muxer time (bench/RESULTS.md, "Reference figures"):

- **Window updates are batched** (go-yamux's rule): a stream returns receive credit to its peer only when the bytes
  the application consumed but has not yet acknowledged reach half the receive window. Stock sends a
  WINDOW_UPDATE on nearly every read (``PY_YAMUX_RELEASE_ON_READ`` defaults on), and pubsub reads each message as
  a varint byte by byte and then its body: ~15 frames written per message received, each its own Noise message
  and syscall. The window auto-tunes like go-yamux: when credit is returned faster than every 4 RTTs, the window
  doubles, up to 16 MiB.
- **Frame headers** are packed and parsed by ``p2p_fast._ext`` (``pack_yamux_header`` / ``unpack_yamux_header``,
  compiled). Stock formats debug strings (f-strings, evaluated even with debug logging off) for every frame sent
  and received; ours logs nothing per frame.
- **Reads and writes without locks** when they need not wait: a read that finds buffered data returns it (stock
  takes the connection's stream lock for every read), a write that fits the send window goes out as one frame
  (the connection's write lock still serialises frames on the wire; a per-stream lock keeps multi-frame writes
  contiguous). Writers waiting for send window wake on the WINDOW_UPDATE instead of polling every 10 ms.
- **A DATA body already decrypted is taken without a timer.** Stock reads every body under ``fail_after`` with the
  timeout re-read from the environment (``PY_YAMUX_DATA_READ_TIMEOUT``) per frame. A gossip message's header and
  body arrive in one Noise message, so the body is nearly always in the secure session's buffer already: we take
  it from there directly. A body still on its way is read under the same timeout (read once, at connect), so a
  peer that announces a body and stalls is still cut off.

Wire behaviour is Yamux as specified (https://github.com/hashicorp/yamux/blob/master/spec.md) and as go-yamux
speaks it: 256 KiB initial window, SYN/ACK on WINDOW_UPDATE frames, FIN/RST on either frame type, PING echo,
GO_AWAY. ``tests/interop/test_p2pd_node.py`` runs the node (with this muxer) against go-libp2p.

Why this is not in :mod:`p2p_fast.stack.patches`: it is a subclass handed to py-libp2p through the documented
``new_host(muxer_opt=...)`` argument, and changes only the connections built with it; stock ``Yamux`` is untouched.
(That py-libp2p 0.8.1 actually uses a registered class needs one patch,
:mod:`p2p_fast.stack.patches.muxer_registered_class`.) It overrides private methods of ``Yamux`` 0.8.1
(``_write_frame``, ``_cleanup_on_error``, ...), which the version guard of :mod:`p2p_fast.stack.patches` covers.
``_write_frame`` also corrects a py-libp2p hazard for its own connections: ``libp2p/security/noise/io.py`` encrypts
(using up a nonce) before it awaits the socket, so a write cancelled in between made every later message fail
authentication at the peer (``InvalidTag``); ours shields the frame write (``tests/node/test_secure_write_cancel.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError, IOException
from libp2p.network.connection.exceptions import RawConnError
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamError, MuxedStreamReset
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    GO_AWAY_PROTOCOL_ERROR,
    MAX_WINDOW_SIZE,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    Yamux,
    YamuxStream,
    _yamux_data_read_timeout,
)
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID

from p2p_fast._ext import YAMUX_HEADER_SIZE, pack_yamux_header, unpack_yamux_header
from p2p_fast.stack.eager_lock import EagerLock
from p2p_fast.stack.libp2p_internals import drain_decrypted

log = logging.getLogger(__name__)

# One DATA frame (header + payload) fits one Noise message (65535 bytes minus the 16-byte tag).
MAX_FRAME_PAYLOAD = 65535 - 16 - YAMUX_HEADER_SIZE
# go-yamux's StreamWriteTimeout: how long a writer waits for the peer to open its window before giving up.
WINDOW_WAIT_TIMEOUT = 10.0
# go-yamux's ConnectionWriteTimeout: a frame write that takes longer means the connection is stuck; it is closed.
CONNECTION_WRITE_TIMEOUT = 10.0
# Control frames the frame reader owes the peer (PING and SYN acknowledgements) and has not yet written: a peer that
# keeps sending them while never reading our answers is cut off beyond this many.
MAX_CONTROL_BACKLOG = 4096
_CLOSED_ERRORS = (RawConnError, ConnectionClosedError, IOException, IncompleteReadError, OSError,
                  trio.ClosedResourceError, trio.BrokenResourceError)


class FastYamuxStream(YamuxStream):
    """A Yamux stream with a lock-free fast path and batched receive-window credit."""

    conn: "FastYamux"

    def __init__(self, stream_id: int, conn: "FastYamux", is_initiator: bool) -> None:
        super().__init__(stream_id, conn, is_initiator)
        self.unacked = 0  # bytes the application consumed that the peer has not been credited for yet
        self._send_lock = trio.Lock()  # held by multi-frame writes, so concurrent writes never interleave

    # -- receive side -------------------------------------------------------------------------------------------
    async def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` bytes (all buffered bytes if ``n`` is None or negative), waiting only if none are buffered.
        MuxedStreamEOF after the peer's FIN once drained, MuxedStreamReset after a reset."""
        if n is None:
            n = -1
        conn = self.conn
        sid = self.stream_id
        while True:
            buf = conn.stream_buffers.get(sid)
            if buf:
                if n < 0 or n >= len(buf):
                    data = bytes(buf)
                    buf.clear()
                else:
                    data = bytes(buf[:n])
                    del buf[:n]
                self.unacked += len(data)
                if self.unacked >= self.target_recv_window >> 1:
                    await self._return_credit()
                if self.closed and not buf:
                    await conn._finalize_stream(self, fully_closed=True)
                return data
            if self.reset_received:
                raise MuxedStreamReset("Stream was reset")
            if buf is None or self.recv_closed:
                raise MuxedStreamEOF("Stream is closed for receiving")
            if conn.event_shutting_down.is_set():
                raise MuxedStreamEOF("Connection shut down")
            if sid not in conn.stream_events:
                raise MuxedStreamEOF("Stream was removed during read")
            event = conn.stream_events[sid] = trio.Event()
            await event.wait()

    async def _return_credit(self) -> None:
        """Send one WINDOW_UPDATE for everything consumed so far, growing the window like go-yamux's auto-tuning:
        if the last update went out less than 4 RTTs ago, the window (not the reader) is the bottleneck."""
        delta = self.unacked
        self.unacked = 0
        now = trio.current_time()
        rtt = self.conn.rtt()
        if (rtt > 0 and self.epoch_start > 0 and now - self.epoch_start < 4 * rtt
                and self.target_recv_window < MAX_WINDOW_SIZE):
            grow = min(self.target_recv_window, MAX_WINDOW_SIZE - self.target_recv_window)
            self.target_recv_window += grow
            delta += grow
        self.epoch_start = now
        self.recv_window += delta
        await self.send_window_update(delta)

    async def send_window_update(self, increment: int, skip_lock: bool = False) -> None:
        if increment <= 0:
            return
        try:
            await self.conn._write_frame(pack_yamux_header(TYPE_WINDOW_UPDATE, 0, self.stream_id, increment))
        except _CLOSED_ERRORS:
            pass  # the data was read; the next read reports the closed connection

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        """The stock per-read policy, replaced by the batched one (kept for callers of the stock API)."""
        self.unacked += bytes_read
        if self.unacked >= self.target_recv_window >> 1:
            await self._return_credit()

    # -- send side ------------------------------------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        total = len(data)
        if self.send_closed:
            raise MuxedStreamError("Stream is closed for sending")
        if self.closed:
            raise MuxedStreamError("Stream is closed")
        conn = self.conn
        if 0 < total <= self.send_window and total <= MAX_FRAME_PAYLOAD and not self._send_lock.locked():
            await self._send_data(bytes(data))
            return
        async with self._send_lock:
            sent = 0
            try:
                while sent < total:
                    if self.send_closed:
                        raise MuxedStreamError("Stream is closed for sending")
                    if self.closed:
                        raise MuxedStreamError("Stream is closed")
                    if self.send_window <= 0:
                        await conn._wait_for_send_window(self)
                        continue
                    n = min(self.send_window, MAX_FRAME_PAYLOAD, total - sent)
                    await self._send_data(bytes(data[sent:sent + n]))
                    sent += n
            except BaseException:
                if 0 < sent < total:
                    await self._reset_after_partial_write()
                raise

    async def _reset_after_partial_write(self) -> None:
        """Part of a message went out and the rest never will (the caller's deadline, a window wait that timed
        out): whatever is written next would be read as its rest, and a length-prefixed protocol would parse
        garbage (GossipSub: "Error parsing message with type 'pubsub.pb.RPC'"). Reset the stream instead, shielded
        from the cancellation that may be why we are here."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 1.0
            try:
                await self.reset()
            except Exception as exc:
                log.debug("yamux: resetting stream %d after a partial write failed: %r", self.stream_id, exc)

    async def _send_data(self, chunk: bytes) -> None:
        """One DATA frame, its length taken from the send window; given back if the frame was not written (the
        writer was cancelled waiting for the connection's write lock), so cancelled writes do not leak window."""
        n = len(chunk)
        self.send_window -= n
        try:
            await self.conn._write_frame(pack_yamux_header(TYPE_DATA, 0, self.stream_id, n) + chunk)
        except BaseException:
            self.send_window += n
            raise

    async def reset(self) -> None:
        await super().reset()
        self.conn._wake_writers()


class FastYamux(Yamux):
    """py-libp2p's Yamux connection with our frame loop, stream class and writer wake-ups (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._window_changed = trio.Event()
        self._window_waiters = 0
        self.frames_sent = 0
        self.frames_received = 0
        # DATA frames with a payload: what the peer's application sent. Its muxer alone (pings, window updates,
        # stream acknowledgements) keeps answering when the application does not (p2p_fast.protocols.health).
        self.data_frames_received = 0
        self.data_read_timeout = _yamux_data_read_timeout()  # stock's setting, read once instead of per frame
        self._write_broken = False  # a frame write timed out part-way: nothing more may be written
        self._control: list[bytes] = []  # control frames queued by the reader (see _send_control)
        self._control_flushing = False
        # Stock's frame lock, without the scheduler round a free trio.Lock costs each frame (eager_lock's doc).
        self._write_lock = EagerLock()

    # -- writing --------------------------------------------------------------------------------------------------
    async def _write_frame(self, data: bytes) -> None:
        """Write one frame as one secure message, atomically with respect to cancellation.

        The secure session encrypts (using up the next nonce) before it awaits the socket, so a cancellation that
        lands inside ``secured_conn.write`` would leave a nonce used but its message unsent or half sent, and every
        later message would fail authentication at the peer (``NoiseInvalidMessage``/``InvalidTag``). Once the
        write lock is held the write is therefore shielded from the caller's cancellation (which takes effect at
        the caller's next checkpoint, after the frame is out) and bounded by its own deadline instead, like
        go-yamux's ConnectionWriteTimeout: a frame that cannot be written within it leaves the session in an
        unknown state, so the connection is closed rather than used again."""
        async with self._write_lock:
            if self._write_broken:
                raise ConnectionClosedError("connection closed after a frame write timed out")
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CONNECTION_WRITE_TIMEOUT
                await self.secured_conn.write(data)
            if scope.cancelled_caught:
                self._write_broken = True
        if self._write_broken:
            log.warning("yamux: writing a frame to %s took over %.0f s; closing the connection", self.peer_id,
                        CONNECTION_WRITE_TIMEOUT)
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 1.0
                try:
                    await self.secured_conn.close()
                except Exception as exc:
                    log.debug("yamux: closing %s failed: %r", self.peer_id, exc)
            raise ConnectionClosedError("frame write timed out; connection closed")
        self.frames_sent += 1

    def _send_control(self, frame: bytes) -> bool:
        """Queue a control frame that the frame reader owes the peer; never waits. False if the peer has let too
        many go unread (the caller ends the session).

        The reader must not await the write lock: it is held by writers blocked on a full socket, which drains
        only when the peer reads, and the peer's reader may be waiting behind *its* writers in the same way (a
        deadlock, ended only by the frame-write timeout closing the connection). go-yamux answers from its recv
        loop without waiting for the send loop either. Queued frames go out in one write, in order, from a task of
        their own."""
        if len(self._control) >= MAX_CONTROL_BACKLOG:
            log.warning("yamux: %s left %d of our control frames unread; closing", self.peer_id, len(self._control))
            return False
        self._control.append(frame)
        if not self._control_flushing:
            assert self._nursery is not None, "frames are read only inside Yamux.start, which sets the nursery"
            self._control_flushing = True
            self._nursery.start_soon(self._flush_control)
        return True

    async def _flush_control(self) -> None:
        try:
            while self._control:
                frames, self._control = b"".join(self._control), []
                await self._write_frame(frames)
        except _CLOSED_ERRORS as exc:
            log.debug("yamux: control frames to %s not sent: %r", self.peer_id, exc)
        finally:
            self._control_flushing = False

    def _wake_writers(self) -> None:
        if self._window_waiters:
            self._window_changed.set()
            self._window_changed = trio.Event()

    async def _wait_for_send_window(self, stream: FastYamuxStream) -> None:
        """Wait until ``stream`` may send again (or is closed); MuxedStreamError after WINDOW_WAIT_TIMEOUT."""
        self._window_waiters += 1
        try:
            with trio.move_on_after(WINDOW_WAIT_TIMEOUT) as scope:
                while stream.send_window <= 0 and not stream.closed and not self.event_shutting_down.is_set():
                    await self._window_changed.wait()
        finally:
            self._window_waiters -= 1
        if scope.cancelled_caught:
            raise MuxedStreamError(f"Timed out waiting for a window update after {WINDOW_WAIT_TIMEOUT:.0f} s")

    # -- streams --------------------------------------------------------------------------------------------------
    def _register(self, stream: FastYamuxStream) -> None:
        sid = stream.stream_id
        self.streams[sid] = stream
        self.stream_buffers[sid] = bytearray()
        self.stream_events[sid] = trio.Event()

    def _forget(self, sid: int) -> None:
        self.streams.pop(sid, None)
        self.stream_buffers.pop(sid, None)
        self.stream_events.pop(sid, None)

    async def open_stream(self) -> FastYamuxStream:
        await self.stream_backlog_semaphore.acquire()
        if self.event_shutting_down.is_set():
            self.stream_backlog_semaphore.release()
            raise MuxedStreamError("Connection is shutting down")
        sid = self.next_stream_id
        self.next_stream_id += 2
        stream = FastYamuxStream(sid, self, True)
        stream._owns_backlog_slot = True
        self._register(stream)
        try:
            await self._write_frame(pack_yamux_header(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0))
        except Exception as exc:
            self.stream_backlog_semaphore.release()
            stream._backlog_slot_released = True
            self._forget(sid)
            raise MuxedStreamError(f"Failed to send SYN: {exc}") from exc
        return stream

    async def _cleanup_on_error(self) -> None:
        await super()._cleanup_on_error()
        self._wake_writers()

    async def close(self, error_code: int = 0) -> None:
        await super().close(error_code)
        self._wake_writers()

    # -- reading --------------------------------------------------------------------------------------------------
    async def _read_exactly(self, n: int) -> bytes:
        conn = self.secured_conn
        data = await conn.read(n)
        if len(data) == n:
            return data
        parts = bytearray(data)
        while len(parts) < n:
            chunk = await conn.read(n - len(parts))
            if not chunk:
                raise IncompleteReadError(
                    f"connection closed after {len(parts)} of {n} bytes", expected_bytes=n,
                    received_bytes=len(parts))
            parts += chunk
        return bytes(parts)

    async def _read_data_body(self, length: int) -> bytes:
        """A DATA frame's body: straight from the secure session's decrypted buffer when it holds all of it (the
        usual case), else read under ``data_read_timeout``."""
        conn = self.secured_conn
        buffered = getattr(conn, "high_watermark", 0) - getattr(conn, "low_watermark", 0)
        if buffered >= length:
            return drain_decrypted(conn, length)
        with trio.fail_after(self.data_read_timeout):
            return await self._read_exactly(length)

    async def handle_incoming(self) -> None:
        """Read frames until the connection ends: decode each header with our codec and dispatch by type."""
        try:
            while not self.event_shutting_down.is_set():
                version, typ, flags, sid, length = unpack_yamux_header(await self._read_exactly(YAMUX_HEADER_SIZE))
                self.frames_received += 1
                if version != 0 or typ > TYPE_GO_AWAY or (typ == TYPE_DATA and length > MAX_WINDOW_SIZE):
                    log.warning("yamux: protocol error from %s (version %d, type %d, length %d); closing",
                                self.peer_id, version, typ, length)
                    await self._send_go_away(GO_AWAY_PROTOCOL_ERROR)
                    break
                if typ == TYPE_DATA:
                    body = await self._read_data_body(length) if length else b""
                    if not await self._on_frame(flags, sid, body, 0):
                        break
                elif typ == TYPE_WINDOW_UPDATE:
                    if not await self._on_frame(flags, sid, b"", length):
                        break
                elif typ == TYPE_PING:
                    if not await self._on_ping(flags, length):
                        break
                else:  # GO_AWAY: the peer ends the session
                    log.debug("yamux: GO_AWAY (code %d) from %s", length, self.peer_id)
                    break
        except _CLOSED_ERRORS as exc:
            log.debug("yamux: connection to %s ended: %r", self.peer_id, exc)
        except trio.TooSlowError:
            log.warning("yamux: timed out reading a DATA frame body from %s; closing", self.peer_id)
        except Exception:
            log.exception("yamux: error on the connection to %s; closing", self.peer_id)
        self.event_shutting_down.set()
        await self._cleanup_on_error()

    async def _send_go_away(self, code: int) -> None:
        try:
            await self._write_frame(pack_yamux_header(TYPE_GO_AWAY, 0, 0, code))
        except _CLOSED_ERRORS:
            pass

    async def _on_frame(self, flags: int, sid: int, body: bytes, delta: int) -> bool:
        """A DATA (``body``) or WINDOW_UPDATE (``delta``) frame; False once the connection is going away."""
        stream = self.streams.get(sid)
        if flags & FLAG_SYN:
            if stream is not None:  # a second SYN for a live stream id: refuse it, as stock py-libp2p does
                return self._send_control(pack_yamux_header(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0))
            stream = FastYamuxStream(sid, self, False)
            self._register(stream)
        elif stream is None:
            return True  # a frame for a stream that is gone (e.g. data racing our reset): ignore it
        if delta:
            stream.send_window += delta
            self._wake_writers()
        if body:
            self.data_frames_received += 1
            buf = self.stream_buffers.get(sid)
            if buf is not None:
                buf += body
                stream.recv_window -= len(body)
                if stream.recv_window < 0:
                    log.warning("yamux: %s exceeded stream %d's receive window by %d bytes", self.peer_id, sid,
                                -stream.recv_window)
                    stream.recv_window = 0
        if flags & FLAG_FIN:
            stream.recv_closed = True
            if stream.send_closed:
                stream.closed = True
        if flags & FLAG_RST:
            stream.closed = True
            stream.reset_received = True
            self._wake_writers()
        event = self.stream_events.get(sid)
        if event is not None:
            event.set()
        if stream.closed:
            self._finalize_stream_locked(stream, fully_closed=True)
        if flags & FLAG_SYN:
            if not flags & FLAG_RST and not self._send_control(
                    pack_yamux_header(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 0)):
                return False
            try:
                await self.new_stream_send_channel.send(stream)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return False
        return True

    async def _on_ping(self, flags: int, value: int) -> bool:
        """False once the session must end (the peer does not read our answers)."""
        if flags & FLAG_SYN:
            return self._send_control(pack_yamux_header(TYPE_PING, FLAG_ACK, 0, value))
        if flags & FLAG_ACK:
            rtt = trio.current_time() - self._ping_sent_time
            self._rtt = rtt if self._rtt == 0.0 else (self._rtt + rtt) / 2
            self._ping_event.set()
        return True


def muxer_options() -> dict[Any, Any]:
    return {YAMUX_PROTOCOL_ID: FastYamux}


__all__ = ["DEFAULT_WINDOW_SIZE", "FastYamux", "FastYamuxStream", "MAX_FRAME_PAYLOAD", "muxer_options"]
