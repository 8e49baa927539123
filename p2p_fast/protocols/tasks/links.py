"""The submitter's streams to workers: one long-lived, pipelined stream per worker, opened on first use.

A ``Link`` is a small state machine::

    CLOSED --begin_open()--> OPENING --opened(writer)--> OPEN --closed()--> CLOSED
                             OPENING --open_failed(now)--> CLOSED (cool-down 0.5 s * 2^failures, up to 10 s)

Messages sent while the stream is not open wait in the link's outbox and go out first when it opens. A link that
cools down (a failed open, or the worker answered ``busy``) is no candidate for new tasks until the cool-down ends.
The node itself is a worker too: its link is ``local``, always OPEN, without a stream.

``LinkPool`` owns the streams (dial, open, pump, read, reset) and knows nothing of tasks: what comes in and what
breaks goes to its owner's ``LinkEvents``.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Protocol

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p_fast.protocols.messages import TaskResponse
from p2p_fast.protocols.tasks.retries import MAX_BACKOFF
from p2p_fast.protocols.tasks.wire import FrameError, FrameReader, FrameWriter, StreamClosed
from p2p_fast.protocols.tasks.window import LinkWindow

if TYPE_CHECKING:
    from p2p_fast.protocols.tasks.journal import TaskRecord

log = logging.getLogger(__name__)
# A stream over a connection that is up opens in one round trip plus multistream; one that takes longer than this is
# riding a dead connection (a peer that froze, or closed its side while a partition ate the FIN).
STREAM_OPEN_TIMEOUT = 10.0
OPEN_BACKOFF_BASE = 0.5


def _negotiated(stream: Any) -> str | None:
    try:
        return str(stream.get_protocol())
    except Exception:
        return None


class LinkState(enum.Enum):
    CLOSED = "closed"
    OPENING = "opening"
    OPEN = "open"


class Link:
    """The submitter's connection to one worker (``local``: this node itself)."""

    def __init__(self, peer_id: str, local: bool = False) -> None:
        self.peer_id = peer_id
        self.local = local
        self.inflight: dict[str, TaskRecord] = {}
        self.heavy = 0
        self.light = 0
        self.state = LinkState.OPEN if local else LinkState.CLOSED
        self.writer: FrameWriter | None = None
        self.outbox: list[Any] = []
        self.open_failures = 0
        self.cooldown_until = 0.0
        self.receipts_sent: deque[tuple[float, str]] = deque()  # (when, task id) on the current stream
        self.window = LinkWindow()  # how many slot-taking tasks may be in flight there (window.py)
        # The worker verifies batch-signed receipts: its stream speaks task protocol 1.1.0 (wire.py). This node
        # itself does; for a remote worker, the last stream opened to it tells.
        self.batch_receipts = local

    @property
    def writable(self) -> bool:
        """A frame given to ``writer`` now goes out on an open stream."""
        return self.state is LinkState.OPEN and self.writer is not None and not self.writer.closed

    def idle(self, now: float) -> bool:
        """No stream and none being opened, and not cooling down: one may be opened now."""
        return self.state is LinkState.CLOSED and self.cooldown_until <= now

    def begin_open(self) -> None:
        assert self.state is LinkState.CLOSED, self.state
        self.state = LinkState.OPENING

    def opened(self, writer: FrameWriter) -> list[Any]:
        """The stream is up: the outbox, to be written first."""
        assert self.state is LinkState.OPENING, self.state
        self.open_failures = 0
        self.writer = writer
        self.state = LinkState.OPEN
        waiting, self.outbox = self.outbox, []
        return waiting

    def open_failed(self, now: float) -> None:
        """No stream could be had: cool down (exponentially longer after each failure in a row), drop the outbox."""
        assert self.state is LinkState.OPENING, self.state
        self.open_failures += 1
        self.cooldown_until = now + min(OPEN_BACKOFF_BASE * 2 ** self.open_failures, MAX_BACKOFF)
        self.state = LinkState.CLOSED
        self.outbox = []

    def closed(self) -> None:
        self.writer = None
        self.state = LinkState.CLOSED

    def cool_down(self, until: float) -> None:
        self.cooldown_until = until


class LinkEvents(Protocol):
    """What the owner of a ``LinkPool`` hears from its streams."""

    def link_opened(self, link: Link, writer: FrameWriter) -> None:
        """The stream is up and the outbox written."""

    def on_response(self, link: Link, resp: TaskResponse) -> None:
        """A response came on the link's stream."""

    def responses_read(self) -> None:
        """Every response of one read was handled (one commit for them all)."""

    def link_closed(self, link: Link) -> None:
        """The stream is gone (before ``link_broken``)."""

    def link_broken(self, link: Link, reason: str, sent: bool) -> None:
        """What was in flight on the link will not be answered; ``sent``: it had gone out on a stream."""


class LinkPool:
    """The links to remote workers and the streams under them."""

    def __init__(self, host: IHost, protocol: str, max_frame: int, connection_timeout: float,
                 addrs_of: Callable[[str], list[multiaddr.Multiaddr]], events: LinkEvents,
                 batch_protocol: str | None = None) -> None:
        self.host = host
        self.protocol = protocol
        self.batch_protocol = batch_protocol  # asked for first when set (a worker of an older release says no)
        self.max_frame = max_frame
        self.connection_timeout = connection_timeout
        self.addrs_of = addrs_of
        self.events = events
        self.links: dict[str, Link] = {}
        self.nursery: trio.Nursery | None = None
        self.queued: set[Link] = set()  # links sent to since the last flush

    async def flush(self) -> None:
        """Write what was queued on the links from the calling task (``FrameWriter.flush``): the requests of a
        submission leave before the submitter's other tasks run."""
        queued, self.queued = self.queued, set()
        for link in queued:
            writer = link.writer
            if writer is not None:
                await writer.flush()

    def get(self, peer_id: str) -> Link | None:
        return self.links.get(peer_id)

    def in_use(self, peer_id: str) -> bool:
        """Whether a stream to ``peer_id`` is open or being opened, or our tasks are in flight there."""
        link = self.links.get(peer_id)
        return link is not None and (bool(link.inflight) or link.state is not LinkState.CLOSED)

    def link_for(self, peer_id: str) -> Link:
        link = self.links.get(peer_id)
        if link is None:
            link = self.links[peer_id] = Link(peer_id)
        return link

    def send(self, link: Link, msg: Any) -> None:
        """Write ``msg`` on the link's stream, or keep it for the stream being (or now) opened."""
        if link.writable:
            assert link.writer is not None
            link.writer.send(msg)
            self.queued.add(link)
            return
        link.outbox.append(msg)
        if link.state is LinkState.CLOSED and self.nursery is not None:
            self.open(link)

    def open(self, link: Link) -> None:
        link.begin_open()
        assert self.nursery is not None
        self.nursery.start_soon(self._run, link)

    async def _run(self, link: Link) -> None:
        """Open a stream to the worker, pump it until it breaks, then fail what was in flight on it."""
        stream = await self._open_stream(ID.from_base58(link.peer_id))
        if stream is None:
            link.open_failed(time.monotonic())
            self.events.link_broken(link, "cannot reach the worker", False)
            return
        link.batch_receipts = self.batch_protocol is not None and _negotiated(stream) == self.batch_protocol
        writer = FrameWriter(stream, self.max_frame)
        for msg in link.opened(writer):
            writer.send(msg)
        self.events.link_opened(link, writer)
        reason = "stream closed"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump_writer, writer, nursery.cancel_scope)
                try:
                    await self._read_responses(link, FrameReader(stream, self.max_frame, self.protocol))
                except StreamClosed as exc:
                    reason = f"worker disconnected ({exc})"
                except FrameError as exc:
                    reason = f"bad frame from worker: {exc}"
                    log.warning("task stream to %s: %s", link.peer_id, exc)
                nursery.cancel_scope.cancel()
            if writer.closed and reason == "stream closed":
                reason = "worker disconnected (write failed)"
        finally:
            link.closed()
            self.events.link_closed(link)
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await stream.reset()
                except Exception:
                    pass
            self.events.link_broken(link, reason, True)

    async def _open_stream(self, pid: ID) -> Any:
        """A task stream to the worker, dialling it first if needed; None when it cannot be had in time.

        The dial gets ``connection_timeout``; the stream itself only ``STREAM_OPEN_TIMEOUT``, after which the
        connection is taken for dead and closed, so the next attempt dials afresh instead of waiting on it again.
        """
        host = self.host
        timeout = self.connection_timeout
        open_timeout = min(STREAM_OPEN_TIMEOUT, timeout)
        try:
            if not host.get_network().get_connections(pid):
                with trio.fail_after(timeout):
                    await host.connect(PeerInfo(pid, self.addrs_of(pid.to_base58())))
            with trio.move_on_after(open_timeout):
                ids = [self.batch_protocol, self.protocol] if self.batch_protocol else [self.protocol]
                return await host.new_stream(pid, ids)
        except trio.TooSlowError:
            log.info("cannot open a task stream to %s: no connection within %g s", pid, timeout)
            return None
        except Exception as exc:
            log.info("cannot open a task stream to %s: %s", pid, exc)
            return None
        log.warning("no task stream to %s within %g s over an open connection: closing it as dead", pid, open_timeout)
        with trio.move_on_after(5):
            try:
                await host.get_network().close_peer(pid)
            except Exception as exc:
                log.debug("closing %s failed: %s", pid, exc)
        return None

    @staticmethod
    async def _pump_writer(writer: FrameWriter, scope: trio.CancelScope) -> None:
        try:
            await writer.run()
        except StreamClosed:
            scope.cancel()

    async def _read_responses(self, link: Link, reader: FrameReader) -> None:
        while True:
            for raw in await reader.read_frames():
                msg = reader.decode(raw)
                if isinstance(msg, TaskResponse):
                    self.events.on_response(link, msg)
                elif msg is not None:
                    log.warning("unexpected %s from worker %s", type(msg).__name__, link.peer_id)
            # One commit for everything this read finished; waiters and receipts follow right after it.
            self.events.responses_read()
