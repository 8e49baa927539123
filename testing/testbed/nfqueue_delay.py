"""Delay packets handed to an NFQUEUE: a user-space stand-in for `tc qdisc ... netem delay` on kernels without netem.

Run inside a namespace (the test bed does it), with iptables sending the packets to shape to the queue:

    iptables -A OUTPUT -o eth0 -j NFQUEUE --queue-num 0 --queue-bypass
    python nfqueue_delay.py --queue 0 --delay-ms 50 --jitter-ms 10

It speaks the nfnetlink_queue protocol over a raw netlink socket (standard library only, no libnetfilter_queue):
bind the queue, ask for packet metadata only, and give each packet its ACCEPT verdict once its delay has passed.
With jitter, packets may be reordered, as netem does. `--queue-bypass` on the iptables rule means traffic flows
undelayed whenever this program is not running. It prints "ready" once bound, and exits on SIGTERM/SIGINT (first
releasing the packets it holds) or after `--max-seconds`.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import itertools
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2

NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NF_ACCEPT = 1

_NLMSGHDR = struct.Struct("=IHHII")


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


class Queue:
    def __init__(self, queue_num: int, maxlen: int = 8192) -> None:
        self.queue_num = queue_num
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.seq = itertools.count(1)
        self._request(NFQNL_MSG_CONFIG, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self._request(NFQNL_MSG_CONFIG,
                      _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                      + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
                      + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
                      + _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)))

    def _message(self, msg_type: int, flags: int, attrs: bytes) -> tuple[int, bytes]:
        seq = next(self.seq)
        body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", self.queue_num) + attrs
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0)
        return seq, header + body

    def _request(self, msg_type: int, attrs: bytes) -> None:
        """Send a config message and wait (bounded) for the kernel's acknowledgement."""
        seq, data = self._message(msg_type, NLM_F_REQUEST | NLM_F_ACK, attrs)
        self.sock.send(data)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            buf = self.sock.recv(65536)
            for mtype, mseq, payload in self._split(buf):
                if mtype == NLMSG_ERROR and mseq == seq:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise OSError(-err, f"nfqueue config rejected: {errno.errorcode.get(-err, err)}")
                    return
        raise TimeoutError("no acknowledgement from nfnetlink_queue")

    @staticmethod
    def _split(buf: bytes):  # type: ignore[no-untyped-def]
        off = 0
        while off + _NLMSGHDR.size <= len(buf):
            length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(buf, off)
            if length < _NLMSGHDR.size:
                break
            yield mtype, seq, buf[off + _NLMSGHDR.size: off + length]
            off += (length + 3) & ~3

    def packet_ids(self) -> list[int]:
        """Receive whatever is waiting on the socket and return the ids of the queued packets in it."""
        ids = []
        try:
            buf = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return ids
        for mtype, _seq, payload in self._split(buf):
            if mtype != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                continue
            off = 4  # skip nfgenmsg
            while off + 4 <= len(payload):
                alen, akind = struct.unpack_from("=HH", payload, off)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", payload, off + 4)[0])
                    break
                off += (alen + 3) & ~3
        return ids

    def accept(self, packet_id: int) -> None:
        _, data = self._message(NFQNL_MSG_VERDICT, NLM_F_REQUEST,
                                _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)))
        self.sock.send(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long, whatever happens")
    args = parser.parse_args(argv)

    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    queue = Queue(args.queue)
    print("ready", flush=True)
    held: list[tuple[float, int, int]] = []  # (due, tiebreak, packet id)
    order = itertools.count()
    delay, jitter = args.delay_ms / 1000.0, args.jitter_ms / 1000.0
    end = time.monotonic() + args.max_seconds
    while not stopping and time.monotonic() < end:
        now = time.monotonic()
        while held and held[0][0] <= now:
            queue.accept(heapq.heappop(held)[2])
        wait = min(held[0][0] - now if held else 0.5, end - now)
        try:
            ready, _, _ = select.select([queue.sock], [], [], max(0.0, wait))
        except InterruptedError:
            continue
        if ready:
            now = time.monotonic()
            for packet_id in queue.packet_ids():
                due = now + max(0.0, delay + (random.uniform(-jitter, jitter) if jitter else 0.0))
                heapq.heappush(held, (due, next(order), packet_id))
    for _, _, packet_id in sorted(held):  # let held packets through rather than have the kernel drop them
        queue.accept(packet_id)
    queue.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
