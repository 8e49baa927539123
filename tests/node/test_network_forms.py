"""1 bootstrap + 4 workers, separate processes, form one network from the bootstrap address alone."""

from __future__ import annotations

from harness import node_config, wait_until


def test_five_nodes_form_one_network_and_gossip_reaches_all(cluster):
    boot = cluster.start("boot", node_config("bootstrap"))
    # Workers get only the bootstrap's address, without its peer ID: they learn it on connect.
    workers = [cluster.start(f"w{i}", node_config("worker", network={"bootstrap_peers": [boot.addr(with_id=False)]}))
               for i in range(4)]
    nodes = [boot, *workers]

    for n in nodes:
        wait_until(lambda n=n: n.status()["live_peers"] >= 4, 40, f"{n.name} to see the 4 other nodes")

    # A gossip message from any node reaches all others.
    for sender in (workers[2], boot):
        text = f"hello-from-{sender.name}"
        marks = {n.name: len(n.lines) for n in nodes}
        sender.command(f"gossip {text}")
        for n in nodes:
            if n is sender:
                continue
            n.wait_output(rf"\[gossip\] {sender.peer_id}: {text}", timeout=20, start=marks[n.name])

    # peers / status show it on the console.
    mark = len(workers[0].lines)
    workers[0].command("peers")
    workers[0].wait_output(r"connected peer\(s\)", start=mark)
    out = "\n".join(workers[0].lines[mark:])
    assert boot.peer_id in out and "role=bootstrap" in out and "caps=bootstrap,discovery" in out
    mark = len(boot.lines)
    boot.command("status")
    boot.wait_output(r"^ready:", start=mark)
    status_text = "\n".join(boot.lines[mark:])
    assert "role:         bootstrap" in status_text
    assert "p2p-network/gossip" in status_text
    st = boot.status()
    assert st["peers"] >= 4 and st["dht"]["routing_table"] >= 1
