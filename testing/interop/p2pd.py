"""Drive a go-libp2p peer (the ``p2pd`` daemon) from Python tests, for interop testing.

``p2pd`` is the go-libp2p daemon shipped in the PyPI wheel ``hivemind==1.1.12``; ``scripts/fetch-p2pd.sh`` extracts
it to ``.cache/p2pd/p2pd``. The daemon is controlled over a unix socket with varint-length-delimited protobuf
messages. This module speaks that protocol itself (schema in :mod:`testing.interop._pb`, a private descriptor pool),
so it never imports ``p2pclient`` and can share a process with libp2p.

Synchronous use (plain pytest)::

    with P2PDaemon() as go:                      # starts p2pd on /ip4/127.0.0.1/tcp/0, Noise only
        go.connect("/ip4/127.0.0.1/tcp/4001", "12D3KooW...")
        sub = go.subscribe("topic")
        go.publish("topic", b"hello")
        msg = sub.get(timeout=5)                 # PubsubMessage(from_peer=..., data=b"hello", ...)

Inside a trio test in the same process, never call the blocking methods from the trio thread while a py-libp2p
host lives in it (a CONNECT waits for the py host to answer, which needs the trio loop): use :class:`AsyncP2PDaemon`,
whose methods run the blocking calls in worker threads and whose subscriptions wake trio without a thread::

    async with AsyncP2PDaemon() as go:
        await go.connect(addr, peer_id)
        sub = await go.subscribe("topic")
        msg = await sub.get(timeout=5)

Process hygiene: the daemon runs with ``-idleTimeout`` and the driver keeps a "persistent" control connection open
for the daemon's whole life. The daemon shuts itself down once that connection closes, so it dies with the test
process even if the test is killed (no orphaned daemons), and :meth:`P2PDaemon.stop` is a graceful close first,
SIGTERM then SIGKILL only as bounded fallbacks.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import base58
import multiaddr

from p2p_fast._ext.framing import MAX_UVARINT_LEN, FrameError, decode_uvarint, encode_frame
from testing.interop import _pb

__all__ = [
    "AsyncP2PDaemon",
    "AsyncSubscription",
    "ControlError",
    "P2PDaemon",
    "P2PDaemonError",
    "P2PDUnavailable",
    "PeerInfo",
    "PubsubMessage",
    "Subscription",
    "ensure_p2pd",
    "find_p2pd",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-p2pd.sh"

_MAX_MSG = 8 * 1024 * 1024


class P2PDaemonError(RuntimeError):
    """The daemon could not be started, died, or the control connection failed."""


class ControlError(P2PDaemonError):
    """The daemon answered a request with an ERROR response (``.msg`` is its text)."""

    def __init__(self, request: str, msg: str):
        super().__init__(f"p2pd {request} failed: {msg}")
        self.msg = msg


class P2PDUnavailable(P2PDaemonError):
    """No p2pd binary could be found or fetched (tests skip on this)."""


# ----------------------------------------------------------------------------------------------------------------
# Locating the binary


def find_p2pd() -> str | None:
    """Path of an executable p2pd, or None. Order: $P2PD_BIN, $P2PD_CACHE/p2pd, <repo>/.cache/p2pd/p2pd, PATH."""
    candidates: list[str | os.PathLike[str]] = []
    if os.environ.get("P2PD_BIN"):
        candidates.append(os.environ["P2PD_BIN"])
    if os.environ.get("P2PD_CACHE"):
        candidates.append(Path(os.environ["P2PD_CACHE"]) / "p2pd")
    candidates.append(REPO_ROOT / ".cache" / "p2pd" / "p2pd")
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return str(c)
    return shutil.which("p2pd")


def ensure_p2pd(*, fetch: bool = True, timeout: float = 180.0) -> str:
    """Return the p2pd path, running ``scripts/fetch-p2pd.sh`` (bounded by ``timeout``) when it is missing.

    Raises :class:`P2PDUnavailable` with the reason when there is none.
    """
    found = find_p2pd()
    if found:
        return found
    if not fetch:
        raise P2PDUnavailable("p2pd not found (run scripts/fetch-p2pd.sh)")
    if not FETCH_SCRIPT.is_file():
        raise P2PDUnavailable(f"p2pd not found and {FETCH_SCRIPT} is missing")
    try:
        proc = subprocess.run(
            ["bash", str(FETCH_SCRIPT)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise P2PDUnavailable(f"scripts/fetch-p2pd.sh took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise P2PDUnavailable(f"scripts/fetch-p2pd.sh failed (exit {proc.returncode}): {tail}")
    path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if path and os.access(path, os.X_OK):
        return path
    found = find_p2pd()
    if found:
        return found
    raise P2PDUnavailable("scripts/fetch-p2pd.sh succeeded but no p2pd binary was found")


# ----------------------------------------------------------------------------------------------------------------
# Wire helpers


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("p2pd closed the control connection")
        buf += chunk
    return bytes(buf)


def _read_varint(sock: socket.socket) -> int:
    """The length prefix of the next control message, read a byte at a time (the socket is shared with what
    follows it, so no read-ahead), checked by the project's own varint decoder."""
    prefix = bytearray()
    while len(prefix) < MAX_UVARINT_LEN:
        prefix += _recv_exactly(sock, 1)
        if not prefix[-1] & 0x80:
            try:
                return decode_uvarint(prefix)[0]
            except FrameError as exc:
                raise P2PDaemonError(f"bad length prefix on the control connection: {exc}") from None
    raise P2PDaemonError("varint too long on the control connection")


def _write_msg(sock: socket.socket, msg: Any) -> None:
    sock.sendall(encode_frame(msg.SerializeToString(), _MAX_MSG))


def _read_msg(sock: socket.socket, cls: Any) -> Any:
    size = _read_varint(sock)
    if size > _MAX_MSG:
        raise P2PDaemonError(f"control message of {size} bytes is too large")
    msg = cls()
    msg.ParseFromString(_recv_exactly(sock, size))
    return msg


def _peer_str(raw: bytes) -> str:
    return base58.b58encode(raw).decode("ascii")


def _peer_bytes(peer_id: Any) -> bytes:
    if isinstance(peer_id, bytes):
        return peer_id
    if hasattr(peer_id, "to_bytes"):  # libp2p.peer.id.ID
        return peer_id.to_bytes()
    return base58.b58decode(str(peer_id))


def _split_p2p(maddr: str) -> tuple[str, str | None]:
    """'/ip4/../tcp/1/p2p/Qm..' -> ('/ip4/../tcp/1', 'Qm..'); no /p2p part -> (maddr, None)."""
    for marker in ("/p2p/", "/ipfs/"):
        idx = maddr.rfind(marker)
        if idx >= 0:
            rest = maddr[idx + len(marker) :]
            if "/" not in rest:
                return maddr[:idx], rest
    return maddr, None


@dataclasses.dataclass(frozen=True)
class PeerInfo:
    """A peer as the daemon reports it: base58 peer id and multiaddr strings (without ``/p2p``)."""

    peer_id: str
    addrs: tuple[str, ...]

    @property
    def p2p_addrs(self) -> tuple[str, ...]:
        """The addrs with ``/p2p/<peer_id>`` appended, ready to dial."""
        return tuple(f"{a}/p2p/{self.peer_id}" for a in self.addrs)


@dataclasses.dataclass(frozen=True)
class PubsubMessage:
    """A gossip message delivered to a daemon subscription. ``from_peer`` is the base58 originator id."""

    from_peer: str
    data: bytes
    seqno: bytes
    topics: tuple[str, ...]
    signature: bytes
    key: bytes


# ----------------------------------------------------------------------------------------------------------------
# Subscriptions


class Subscription:
    """A daemon pubsub subscription: one unix connection, read by a daemon thread into a queue.

    Messages are kept in arrival order until taken. Every wait is bounded by the caller's ``timeout``.
    Closing the subscription (or stopping the daemon) cancels it in the daemon.
    """

    def __init__(self, topic: str, sock: socket.socket):
        self.topic = topic
        self._sock = sock
        self._queue: collections.deque[PubsubMessage] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._listeners: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._reader, name=f"p2pd-sub-{topic}", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        try:
            while True:
                pm = _read_msg(self._sock, _pb.PSMessage)
                msg = PubsubMessage(
                    from_peer=_peer_str(getattr(pm, "from")),
                    data=pm.data,
                    seqno=pm.seqno,
                    topics=tuple(pm.topicIDs),
                    signature=pm.signature,
                    key=pm.key,
                )
                with self._cond:
                    self._queue.append(msg)
                    self._cond.notify_all()
                    listeners = list(self._listeners)
                for fn in listeners:
                    fn()
        except (OSError, EOFError, P2PDaemonError) as exc:
            with self._cond:
                if not self._closed:
                    self._error = exc
                self._closed = True
                self._cond.notify_all()
                listeners = list(self._listeners)
            for fn in listeners:
                fn()

    @property
    def closed(self) -> bool:
        return self._closed

    def get_nowait(self) -> PubsubMessage | None:
        """The oldest undelivered message, or None."""
        with self._cond:
            return self._queue.popleft() if self._queue else None

    def get(self, timeout: float) -> PubsubMessage:
        """Wait up to ``timeout`` seconds for the next message; raises TimeoutError, or P2PDaemonError if the
        subscription ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._closed:
                    raise P2PDaemonError(f"subscription to {self.topic!r} ended: {self._error or 'closed'}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no message on {self.topic!r} within {timeout} s")
                self._cond.wait(left)
            return self._queue.popleft()

    def wait_for(self, predicate: Callable[[PubsubMessage], bool], timeout: float) -> PubsubMessage:
        """Take messages until one satisfies ``predicate`` (others are dropped); bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message on {self.topic!r} within {timeout} s")
            msg = self.get(left)
            if predicate(msg):
                return msg

    def drain(self) -> list[PubsubMessage]:
        """Take every message received so far."""
        with self._cond:
            out = list(self._queue)
            self._queue.clear()
            return out

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (from the reader thread) after each message arrives and when the subscription ends."""
        with self._cond:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        with self._cond:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def close(self) -> None:
        """Cancel the subscription (closes its connection; the daemon then cancels it). Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __iter__(self) -> Iterator[PubsubMessage]:
        """Iterate over the messages received so far (non-blocking)."""
        while (msg := self.get_nowait()) is not None:
            yield msg

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------------------
# The daemon


class P2PDaemon:
    """One go-libp2p peer: a ``p2pd`` process and a blocking, thread-safe client for its control socket.

    :param binary: path to p2pd; default :func:`ensure_p2pd` (fetches it when missing).
    :param host_addrs: libp2p listen addrs; keep them on 127.0.0.1. ``tcp/0`` picks a free port
        (read the real one from :meth:`identify` / :attr:`addrs`).
    :param security: channel security protocols the daemon offers, any of ``"noise"``, ``"tls"``.
    :param pubsub: enable pubsub (``-pubsub``) with ``pubsub_router`` (``"gossipsub"`` or ``"floodsub"``).
    :param pubsub_sign: sign published messages (``-pubsubSign``); ``pubsub_sign_strict`` rejects unsigned ones.
    :param gossipsub_heartbeat: heartbeat interval in seconds (go's default is 1 s).
    :param extra_args: more p2pd flags, e.g. ``["-dht"]``.
    :param startup_timeout: bound on waiting for the control socket.
    :param request_timeout: default bound on one control request.
    :param idle_timeout: the daemon exits by itself this long after its persistent control connection is gone
        (or if the driver never opens one).
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        host_addrs: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        security: Sequence[str] = ("noise",),
        pubsub: bool = True,
        pubsub_router: str = "gossipsub",
        pubsub_sign: bool = True,
        pubsub_sign_strict: bool = True,
        gossipsub_heartbeat: float | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 20.0,
        request_timeout: float = 15.0,
        idle_timeout: float = 30.0,
    ):
        unknown = set(security) - {"noise", "tls"}
        if unknown or not security:
            raise ValueError(f"security must be a non-empty subset of ('noise', 'tls'), got {security!r}")
        self.binary = str(binary) if binary is not None else None
        self.host_addrs = tuple(host_addrs)
        self.security = tuple(security)
        self.pubsub = pubsub
        self.pubsub_router = pubsub_router
        self.pubsub_sign = pubsub_sign
        self.pubsub_sign_strict = pubsub_sign_strict
        self.gossipsub_heartbeat = gossipsub_heartbeat
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout

        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.log_text = ""  # the daemon's stdout+stderr, filled in by stop()
        self._dir: str | None = None
        self._log_file: Any = None
        self._control: socket.socket | None = None
        self._persistent: socket.socket | None = None
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._info: PeerInfo | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def workdir(self) -> str | None:
        """The daemon's private temp dir (control socket, log) while it runs; removed by :meth:`stop`."""
        return self._dir

    @property
    def socket_path(self) -> str:
        assert self._dir is not None, "daemon not started"
        return os.path.join(self._dir, "p2pd.sock")

    def command(self) -> list[str]:
        """The p2pd command line :meth:`start` runs."""
        assert self.binary and self._dir
        args = [
            self.binary,
            f"-listen=/unix{self.socket_path}",
            f"-hostAddrs={','.join(self.host_addrs)}",
            f"-noise={'true' if 'noise' in self.security else 'false'}",
            f"-tls={'true' if 'tls' in self.security else 'false'}",
            f"-idleTimeout={max(1, math.ceil(self.idle_timeout))}s",
        ]
        if self.pubsub:
            args += [
                "-pubsub",
                f"-pubsubRouter={self.pubsub_router}",
                f"-pubsubSign={'true' if self.pubsub_sign else 'false'}",
                f"-pubsubSignStrict={'true' if self.pubsub_sign_strict else 'false'}",
            ]
            if self.gossipsub_heartbeat is not None:
                args.append(f"-gossipsubHeartbeatInterval={int(self.gossipsub_heartbeat * 1000)}ms")
        return args + list(self.extra_args)

    def start(self) -> P2PDaemon:
        """Start the daemon and wait (bounded by ``startup_timeout``) until it answers IDENTIFY. Returns self."""
        if self.proc is not None:
            raise P2PDaemonError("daemon already started")
        if self.binary is None:
            self.binary = ensure_p2pd()
        # A short path: unix socket paths are limited to 107 bytes.
        self._dir = tempfile.mkdtemp(prefix="p2pd-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self._log_file = open(os.path.join(self._dir, "p2pd.log"), "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
            )
            deadline = time.monotonic() + self.startup_timeout
            # The control socket file appears slightly before the daemon accepts on it: retry the first connect.
            self._persistent = self._connect_control(deadline)
            self._persistent.settimeout(max(0.1, deadline - time.monotonic()))
            _write_msg(self._persistent, _pb.Request(type=_pb.Request.PERSISTENT_CONN_UPGRADE))
            resp = _read_msg(self._persistent, _pb.Response)
            if resp.type != _pb.Response.OK:
                raise ControlError("PERSISTENT_CONN_UPGRADE", resp.error.msg)
            self._persistent.settimeout(None)  # never read again: it only keeps the daemon alive
            self._control = self._connect_control(deadline)
            self.identify()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, (OSError, EOFError, socket.timeout)):
                raise P2PDaemonError(f"p2pd did not start: {exc!r}\n--- p2pd log ---\n{self.log_text}") from exc
            raise
        return self

    def _connect_control(self, deadline: float) -> socket.socket:
        delay = 0.01
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise P2PDaemonError(f"p2pd exited with code {self.proc.returncode} during startup{self._log_tail()}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.request_timeout)
            try:
                sock.connect(self.socket_path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
            if time.monotonic() + delay > deadline:
                raise P2PDaemonError(
                    f"p2pd control socket not ready within {self.startup_timeout} s{self._log_tail()}"
                )
            time.sleep(delay)  # bounded poll of an external process's socket; no event to wait on
            delay = min(delay * 2, 0.2)

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self._dir or "", "p2pd.log"), "rb") as f:
                text = f.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""
        return f"\n--- p2pd log ---\n{text}" if text else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the daemon: close subscriptions and control connections (the daemon then closes itself), then
        SIGTERM, then SIGKILL, each bounded by ``timeout``. Idempotent. Returns the exit code."""
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        for attr in ("_control", "_persistent"):
            sock = getattr(self, attr)
            if sock is not None:
                try:
                    sock.close()
                finally:
                    setattr(self, attr, None)
        if self.proc is not None:
            try:
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)  # the daemon ignores SIGINT
                try:
                    self.returncode = self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.returncode = self.proc.wait(timeout=timeout)
            self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._dir is not None:
            tail = self._log_tail()
            self.log_text = tail.split("--- p2pd log ---\n", 1)[-1] if tail else ""
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        return self.returncode

    def __enter__(self) -> P2PDaemon:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; tests should call stop()
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.kill()

    # -- control requests -----------------------------------------------------------------------------------

    def _request(self, req: Any, name: str, timeout: float | None = None) -> Any:
        with self._lock:
            if self.proc is None:
                raise P2PDaemonError("daemon not started")
            if self._control is None:
                self._control = self._connect_control(time.monotonic() + self.request_timeout)
            sock = self._control
            sock.settimeout(timeout if timeout is not None else self.request_timeout)
            try:
                _write_msg(sock, req)
                resp = _read_msg(sock, _pb.Response)
            except (OSError, EOFError) as exc:
                # A timed-out or broken connection is out of sync: drop it, the next request reconnects.
                sock.close()
                self._control = None
                state = "running" if self.running else f"exited ({self.proc.poll()})"
                raise P2PDaemonError(f"p2pd {name}: {exc!r} (daemon {state}){self._log_tail()}") from exc
        if resp.type != _pb.Response.OK:
            raise ControlError(name, resp.error.msg)
        return resp

    def identify(self) -> PeerInfo:
        """IDENTIFY: the daemon's peer id and listen addrs (also cached in :attr:`info`)."""
        resp = self._request(_pb.Request(type=_pb.Request.IDENTIFY), "IDENTIFY")
        self._info = PeerInfo(
            peer_id=_peer_str(resp.identify.id),
            addrs=tuple(str(multiaddr.Multiaddr(a)) for a in resp.identify.addrs),
        )
        return self._info

    @property
    def info(self) -> PeerInfo:
        if self._info is None:
            return self.identify()
        return self._info

    @property
    def peer_id(self) -> str:
        """Base58 peer id."""
        return self.info.peer_id

    @property
    def addrs(self) -> tuple[str, ...]:
        """Listen addrs, without ``/p2p``."""
        return self.info.addrs

    @property
    def p2p_addrs(self) -> tuple[str, ...]:
        """Listen addrs with ``/p2p/<peer id>``."""
        return self.info.p2p_addrs

    def connect(self, maddr: str | Sequence[str], peer_id: Any = None, timeout: float = 10.0) -> None:
        """CONNECT: dial a peer. ``maddr`` is one multiaddr or several; ``peer_id`` (base58 str, bytes or a libp2p
        ID) may be omitted when the addr ends in ``/p2p/<id>``."""
        addrs = [maddr] if isinstance(maddr, str) else list(maddr)
        plain: list[bytes] = []
        for a in addrs:
            base, pid = _split_p2p(str(a))
            if peer_id is None:
                peer_id = pid
            plain.append(multiaddr.Multiaddr(base).to_bytes())
        if peer_id is None:
            raise ValueError("connect needs a peer id (argument or /p2p/<id> in the addr)")
        req = _pb.Request(
            type=_pb.Request.CONNECT,
            connect=_pb.ConnectRequest(peer=_peer_bytes(peer_id), addrs=plain, timeout=max(1, math.ceil(timeout))),
        )
        self._request(req, "CONNECT", timeout=timeout + 5)

    def disconnect(self, peer_id: Any) -> None:
        """DISCONNECT: close every connection to the peer."""
        req = _pb.Request(type=_pb.Request.DISCONNECT, disconnect=_pb.DisconnectRequest(peer=_peer_bytes(peer_id)))
        self._request(req, "DISCONNECT")

    def peers(self) -> list[PeerInfo]:
        """LIST_PEERS: one entry per open connection (peer id and the connection's remote addr)."""
        resp = self._request(_pb.Request(type=_pb.Request.LIST_PEERS), "LIST_PEERS")
        return [
            PeerInfo(peer_id=_peer_str(p.id), addrs=tuple(str(multiaddr.Multiaddr(a)) for a in p.addrs))
            for p in resp.peers
        ]

    def peer_ids(self) -> set[str]:
        """Base58 ids of the connected peers."""
        return {p.peer_id for p in self.peers()}

    def publish(self, topic: str, data: bytes) -> None:
        """PUBSUB PUBLISH ``data`` on ``topic`` (the daemon joins the topic if needed)."""
        req = _pb.Request(type=_pb.Request.PUBSUB, pubsub=_pb.PSRequest(type=_pb.PSRequest.PUBLISH, topic=topic,
                                                                           data=bytes(data)))
        self._request(req, "PUBSUB PUBLISH")

    def topics(self) -> list[str]:
        """PUBSUB GET_TOPICS: topics the daemon has joined."""
        req = _pb.Request(type=_pb.Request.PUBSUB, pubsub=_pb.PSRequest(type=_pb.PSRequest.GET_TOPICS))
        return list(self._request(req, "PUBSUB GET_TOPICS").pubsub.topics)

    def pubsub_peers(self, topic: str) -> list[str]:
        """PUBSUB LIST_PEERS: base58 ids of the peers the daemon knows to be subscribed to ``topic``."""
        req = _pb.Request(type=_pb.Request.PUBSUB, pubsub=_pb.PSRequest(type=_pb.PSRequest.LIST_PEERS, topic=topic))
        return [_peer_str(p) for p in self._request(req, "PUBSUB LIST_PEERS").pubsub.peerIDs]

    def subscribe(self, topic: str) -> Subscription:
        """PUBSUB SUBSCRIBE on its own connection; messages stream into the returned :class:`Subscription`."""
        if self.proc is None:
            raise P2PDaemonError("daemon not started")
        sock = self._connect_control(time.monotonic() + self.request_timeout)
        try:
            sock.settimeout(self.request_timeout)
            _write_msg(sock, _pb.Request(type=_pb.Request.PUBSUB,
                                         pubsub=_pb.PSRequest(type=_pb.PSRequest.SUBSCRIBE, topic=topic)))
            resp = _read_msg(sock, _pb.Response)
            if resp.type != _pb.Response.OK:
                raise ControlError("PUBSUB SUBSCRIBE", resp.error.msg)
            sock.settimeout(None)  # the reader thread blocks until a message arrives or the socket is closed
        except BaseException:
            sock.close()
            raise
        sub = Subscription(topic, sock)
        self._subs.append(sub)
        return sub

    # -- helpers --------------------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str = "condition",
                   interval: float = 0.05) -> None:
        """Poll ``predicate`` (e.g. a query to the daemon) until true; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"p2pd: {what} not reached within {timeout} s")
            time.sleep(interval)

    def wait_for_peer(self, peer_id: Any, timeout: float = 10.0) -> None:
        """Wait until the daemon has a connection to ``peer_id``."""
        pid = _peer_str(_peer_bytes(peer_id))
        self.wait_until(lambda: pid in self.peer_ids(), timeout, f"connection to {pid}")

    def wait_for_topic_peer(self, topic: str, peer_id: Any, timeout: float = 10.0) -> None:
        """Wait until the daemon sees ``peer_id`` subscribed to ``topic``."""
        pid = _peer_str(_peer_bytes(peer_id))
        self.wait_until(lambda: pid in self.pubsub_peers(topic), timeout, f"{pid} subscribed to {topic!r}")


# ----------------------------------------------------------------------------------------------------------------
# trio facade


class AsyncSubscription:
    """Trio view of a :class:`Subscription`: waiting needs no worker thread (the reader thread wakes trio)."""

    def __init__(self, sub: Subscription):
        import trio

        self.sub = sub
        self.topic = sub.topic
        self._token = trio.lowlevel.current_trio_token()
        self._event = trio.Event()
        sub.add_listener(self._notify)

    def _notify(self) -> None:  # reader thread
        try:
            self._token.run_sync_soon(self._wake)
        except RuntimeError:  # trio.RunFinishedError: the trio run is over, nobody is waiting
            pass

    def _wake(self) -> None:  # trio thread
        self._event.set()

    async def get(self, timeout: float) -> PubsubMessage:
        """Next message within ``timeout`` s; raises TimeoutError, or P2PDaemonError if the subscription ended."""
        import trio

        with trio.move_on_after(timeout):
            while True:
                # A fresh event before looking: a message that lands after the look sets this very event.
                self._event = trio.Event()
                msg = self.sub.get_nowait()
                if msg is not None:
                    return msg
                if self.sub.closed:
                    raise P2PDaemonError(f"subscription to {self.topic!r} ended")
                await self._event.wait()
        raise TimeoutError(f"no message on {self.topic!r} within {timeout} s")

    async def wait_for(self, predicate: Callable[[PubsubMessage], bool], timeout: float) -> PubsubMessage:
        """Take messages until one satisfies ``predicate``; bounded by ``timeout``."""
        import trio

        deadline = trio.current_time() + timeout
        while True:
            left = deadline - trio.current_time()
            if left <= 0:
                raise TimeoutError(f"no matching message on {self.topic!r} within {timeout} s")
            msg = await self.get(left)
            if predicate(msg):
                return msg

    def get_nowait(self) -> PubsubMessage | None:
        return self.sub.get_nowait()

    def drain(self) -> list[PubsubMessage]:
        return self.sub.drain()

    def close(self) -> None:
        self.sub.remove_listener(self._notify)
        self.sub.close()


class AsyncP2PDaemon:
    """Trio facade over :class:`P2PDaemon`: the same operations as coroutines, run in worker threads so the trio
    loop (and any py-libp2p host on it) keeps running while the daemon works. ``.sync`` is the wrapped driver.

    Takes the same keyword arguments as :class:`P2PDaemon`, or an existing one via ``daemon=``.
    """

    def __init__(self, binary: str | os.PathLike[str] | None = None, *, daemon: P2PDaemon | None = None,
                 **kwargs: Any):
        self.sync = daemon if daemon is not None else P2PDaemon(binary, **kwargs)

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import functools

        import trio

        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def start(self) -> AsyncP2PDaemon:
        import trio

        try:
            await self._run(self.sync.start)
        except BaseException:  # incl. a cancellation that arrived while the worker thread was starting it
            with trio.CancelScope(shield=True):
                await self._run(self.sync.stop)
            raise
        return self

    async def stop(self, timeout: float = 5.0) -> int | None:
        return await self._run(self.sync.stop, timeout)

    async def __aenter__(self) -> AsyncP2PDaemon:
        if self.sync.proc is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        import trio

        with trio.CancelScope(shield=True):
            await self.stop()

    @property
    def info(self) -> PeerInfo:
        return self.sync.info

    @property
    def peer_id(self) -> str:
        return self.sync.peer_id

    @property
    def addrs(self) -> tuple[str, ...]:
        return self.sync.addrs

    @property
    def p2p_addrs(self) -> tuple[str, ...]:
        return self.sync.p2p_addrs

    async def identify(self) -> PeerInfo:
        return await self._run(self.sync.identify)

    async def connect(self, maddr: str | Sequence[str], peer_id: Any = None, timeout: float = 10.0) -> None:
        await self._run(self.sync.connect, maddr, peer_id, timeout)

    async def disconnect(self, peer_id: Any) -> None:
        await self._run(self.sync.disconnect, peer_id)

    async def peers(self) -> list[PeerInfo]:
        return await self._run(self.sync.peers)

    async def peer_ids(self) -> set[str]:
        return await self._run(self.sync.peer_ids)

    async def publish(self, topic: str, data: bytes) -> None:
        await self._run(self.sync.publish, topic, data)

    async def topics(self) -> list[str]:
        return await self._run(self.sync.topics)

    async def pubsub_peers(self, topic: str) -> list[str]:
        return await self._run(self.sync.pubsub_peers, topic)

    async def subscribe(self, topic: str) -> AsyncSubscription:
        sub = await self._run(self.sync.subscribe, topic)
        return AsyncSubscription(sub)

    async def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str = "condition",
                         interval: float = 0.05) -> None:
        """Poll an async (or sync) ``predicate`` until true, bounded by ``timeout``."""
        import inspect

        import trio

        with trio.move_on_after(timeout):
            while True:
                ok = predicate()
                if inspect.isawaitable(ok):
                    ok = await ok
                if ok:
                    return
                await trio.sleep(interval)
        raise TimeoutError(f"p2pd: {what} not reached within {timeout} s")

    async def wait_for_peer(self, peer_id: Any, timeout: float = 10.0) -> None:
        pid = _peer_str(_peer_bytes(peer_id))

        async def ok() -> bool:
            return pid in await self.peer_ids()

        await self.wait_until(ok, timeout, f"connection to {pid}")

    async def wait_for_topic_peer(self, topic: str, peer_id: Any, timeout: float = 10.0) -> None:
        pid = _peer_str(_peer_bytes(peer_id))

        async def ok() -> bool:
            return pid in await self.pubsub_peers(topic)

        await self.wait_until(ok, timeout, f"{pid} subscribed to {topic!r}")
