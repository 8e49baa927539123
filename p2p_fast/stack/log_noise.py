"""One line, not a traceback, for the network events py-libp2p logs as if they were crashes.

py-libp2p 0.8.1 logs a peer resetting a connection, or a connection set-up cut off by its deadline, with the whole
traceback: ``Swarm.add_conn`` formats it into the message of its ``[ADDCONN_FAIL]`` warning, and handlers such as
Identify's log a ``BrokenPipeError`` with ``exc_info``. In a join storm or under connection-manager pruning these
are routine (the peer went away; the dial timed out and will be retried) and they buried real failures: 18 of the
22 Traceback lines of a 100-node run were ``[ADDCONN_FAIL] ... Cancelled(source='deadline')``.

:class:`NetworkNoise` keeps each such record, at its level, with the exception's type and text on the same line, and
drops only the traceback. Anything else keeps its traceback: an exception that is not one of :data:`NETWORK_EVENTS`
(or a group made only of them), and every record of our own loggers.

Some py-libp2p functions log a failure at ERROR and then raise it (:data:`RAISED_TOO`: a stream that could not be
opened to a peer that was closing the connection, a peer that dropped in the middle of the muxer handshake). The
caller gets the exception and handles it (a retry, another peer, a log line of ours at the level it deserves), so
the record is a DEBUG one: shown with ``--log-level debug``. A stream handler that logs at ERROR a stream its
asker reset or closed before the answer (:data:`PEER_WENT_AWAY`) logs a WARNING. In a 40-node join storm these were 93 ERROR lines
(printed bare before the node's logging took py-libp2p's records in, so nothing counted them).
"""

from __future__ import annotations

import logging

import trio

NETWORK_EVENTS: tuple[type[BaseException], ...] = (
    trio.Cancelled,  # a deadline (connection_timeout, a dial's move_on_after) or a stopping node
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ConnectionError,  # BrokenPipeError, ConnectionResetError, ...
    EOFError,
    TimeoutError,
)
_TRACEBACK = "Traceback (most recent call last):"
#: py-libp2p 0.8.1 records at ERROR for a failure that the same function then raises to its caller, who handles it
#: (our code logs what deserves it): logger name -> message prefixes. They become DEBUG records.
RAISED_TOO: dict[str, tuple[str, ...]] = {
    "libp2p.host.basic_host": ("Failed to open stream to peer ",),  # BasicHost.new_stream -> StreamFailure
    "libp2p.network.swarm": ("fail to upgrade mux for peer ",),  # inbound upgrade -> SwarmException
    "libp2p.protocol_muxer.multiselect_client": (  # MultiselectClient.handshake -> MultiselectClientError
        "MultiselectClient handshake: read failed", "MultiselectClient handshake: write failed"),
}
#: py-libp2p 0.8.1 stream handlers that log at ERROR, with only ``str(exc)``, a stream its peer reset or closed
#: before the answer (the asker's own deadline): logger name -> message prefix. They become WARNING records.
PEER_WENT_AWAY: dict[str, str] = {
    "libp2p.host.autonat.autonat": "Error handling AutoNAT stream: ",  # AutoNAT._handle_stream
    "libp2p.identity.identify_push.identify_push": "Error pushing identify to peer ",  # push_identify_to_peer
    "libp2p.identity.identify.identify": "Error sending identify response to ",  # identify's stream handler
}
_GONE = ("stream is reset", "stream reset", "stream is closed", "connection closed", "connection reset", "broken pipe",
         "eof", "failed to open a stream")  # in the handler's message, lowercased; an empty one (StreamEOF) too


def _libp2p_events() -> tuple[type[BaseException], ...]:
    """py-libp2p's own "the connection or stream went away" errors (imported late: this module loads no libp2p)."""
    try:
        from libp2p.io.exceptions import IOException
        from libp2p.network.exceptions import SwarmException
        from libp2p.stream_muxer.exceptions import MuxedConnUnavailable, MuxedStreamError
    except ImportError:  # pragma: no cover - py-libp2p moved them: their tracebacks are kept
        return ()
    return IOException, SwarmException, MuxedConnUnavailable, MuxedStreamError


def is_network_event(exc: BaseException, kinds: tuple[type[BaseException], ...], depth: int = 0) -> bool:
    """``exc`` is one of ``kinds``, or a group whose every leaf is, and so is every exception it was raised from or
    while handling: a ``SwarmException`` raised from a Noise ``InvalidTag`` (an authentication failure, a bug) keeps
    its traceback."""
    if depth > 8:  # a chain this long is not a plain network event: keep its traceback
        return False
    if isinstance(exc, BaseExceptionGroup):
        ok = all(is_network_event(e, kinds, depth + 1) for e in exc.exceptions)
    else:
        ok = isinstance(exc, kinds)
    for linked in (exc.__cause__, exc.__context__):
        if ok and linked is not None and linked is not exc:
            ok = is_network_event(linked, kinds, depth + 1)
    return ok


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}".splitlines()[0][:300]


class NetworkNoise(logging.Filter):
    """A handler filter: py-libp2p records about a network event lose their traceback, nothing else changes."""

    def __init__(self, prefix: str = "libp2p") -> None:
        super().__init__()
        self.prefix = prefix
        self._kinds: tuple[type[BaseException], ...] | None = None

    def kinds(self) -> tuple[type[BaseException], ...]:
        if self._kinds is None:
            self._kinds = NETWORK_EVENTS + _libp2p_events()
        return self._kinds

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == self.prefix or record.name.startswith(self.prefix + ".")):
            return True
        prefixes = RAISED_TOO.get(record.name)
        if prefixes and isinstance(record.msg, str) and record.msg.startswith(prefixes):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(self.prefix).isEnabledFor(logging.DEBUG)
        gone = PEER_WENT_AWAY.get(record.name)
        if gone and record.levelno > logging.WARNING and isinstance(record.msg, str) and record.msg.startswith(gone):
            detail = record.getMessage()[len(gone):].strip().lower()
            if not detail or any(word in detail for word in _GONE):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        kinds = self.kinds()
        if record.exc_info and record.exc_info[1] is not None and is_network_event(record.exc_info[1], kinds):
            record.msg = f"{record.getMessage()} ({_describe(record.exc_info[1])})"
            record.args = None
            record.exc_info = record.exc_text = None
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(a, BaseException) and is_network_event(a, kinds) for a in args) and any(
                isinstance(a, str) and _TRACEBACK in a for a in args):
            # add_conn's "%r\n%s" with a formatted traceback as the last argument
            record.args = tuple("" if isinstance(a, str) and _TRACEBACK in a else a for a in args)
            record.msg = record.getMessage().rstrip("\n")
            record.args = None
        return True
