"""Garbage on the libp2p port, half-open connections and oversized gossip do not disturb a node."""

from __future__ import annotations

import os
import socket

from harness import node_config, wait_until


def _port(node) -> int:
    return int(node.addr().split("/tcp/")[1].split("/")[0])


def test_garbage_and_half_open_connections_do_not_disturb_the_node(cluster):
    boot = cluster.start("boot", node_config("bootstrap"))
    w = cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
    wait_until(lambda: w.status()["live_peers"] >= 1, 30, "worker to see the bootstrap")
    port = _port(boot)

    # Half-open: connections that say nothing, kept open while the node works.
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    try:
        # Garbage: random bytes, a fake multistream header with a huge length, HTTP, a lone byte.
        payloads = [os.urandom(4096), b"\x13/multistream/1.0.0\n\xff\xff\xff\xff\x0f" + os.urandom(64),
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00", b"\x80" * 64]
        for data in payloads * 4:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(5)
                    while s.recv(4096):
                        pass
                except OSError:
                    pass  # the node may reset us: that is fine

        # The node still serves: a new peer joins and gossip flows both ways.
        w2 = cluster.start("w2", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
        wait_until(lambda: w2.status()["live_peers"] >= 2, 30, "a new worker to join after the garbage")
        mark = len(w.lines)
        w2.command("gossip still-fine")
        w.wait_output(r"\[gossip\] .*: still-fine$", start=mark)
        assert boot.runtime() is not None and boot.proc.poll() is None
        assist = boot.get("/healthz")
        assert assist == "ok\n"
    finally:
        for s in idle:
            s.close()


def test_oversized_gossip_is_refused_locally_with_a_clear_error(cluster):
    boot = cluster.start("boot", node_config("bootstrap", gossip={"max_message_size": 1024}))
    mark = len(boot.lines)
    boot.command("gossip " + "x" * 2000)
    boot.wait_output(r"error: .*over gossip.max_message_size \(1024\)", start=mark)
    mark = len(boot.lines)
    boot.command("status")
    boot.wait_output(r"^role:\s+bootstrap", start=mark)
