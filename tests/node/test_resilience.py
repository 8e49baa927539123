"""The network outlives its bootstrap node, and a restarted node keeps its identity."""

from __future__ import annotations

from harness import node_config, wait_until


def _gossip_reaches(sender, receivers, text: str, timeout: float = 20) -> None:
    marks = {n.name: len(n.lines) for n in receivers}
    sender.command(f"gossip {text}")
    for n in receivers:
        n.wait_output(rf"\[gossip\] {sender.peer_id}: {text}$", timeout=timeout, start=marks[n.name])


def test_kill9_bootstrap_network_keeps_gossiping_and_restart_rejoins_with_same_id(cluster):
    boot = cluster.start("boot", node_config("bootstrap"))
    boot_port = int(boot.addr().split("/tcp/")[1].split("/")[0])
    boot_id = boot.peer_id
    workers = [cluster.start(f"w{i}", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
               for i in range(3)]
    # Workers must know each other directly (not only through the hub) before the hub dies.
    for w in workers:
        wait_until(lambda w=w: len({p["peer_id"] for p in w.peers()} - {boot_id}) >= 2, 40,
                   f"{w.name} to connect to the other workers directly")

    boot.kill9()
    _gossip_reaches(workers[0], workers[1:], "after-bootstrap-died")
    _gossip_reaches(workers[2], workers[:2], "still-alive")

    # Restart on the same port and data dir: same identity, and the workers take it back.
    boot.config["node"]["listen_port"] = boot_port
    boot.start().wait_started()
    assert boot.peer_id == boot_id
    for w in workers:
        wait_until(lambda w=w: boot_id in {p["peer_id"] for p in w.peers()}, 40, f"{w.name} to reconnect to boot")
    wait_until(lambda: boot.status()["live_peers"] >= 3, 30, "restarted bootstrap to see the workers again")
    _gossip_reaches(boot, workers, "bootstrap-is-back")


def test_node_rebootstraps_when_its_peer_count_falls_to_zero(cluster):
    boot = cluster.start("boot", node_config("bootstrap"))
    port = int(boot.addr().split("/tcp/")[1].split("/")[0])
    w = cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr(with_id=False)]}))
    wait_until(lambda: boot.peer_id in {p["peer_id"] for p in w.peers()}, 30, "worker to join")
    boot.kill9()
    wait_until(lambda: w.status()["peers"] == 0, 30, "worker to notice it has no peers left")
    boot.config["node"]["listen_port"] = port
    boot.start().wait_started()
    wait_until(lambda: boot.peer_id in {p["peer_id"] for p in w.peers()}, 30, "worker to re-bootstrap")
    assert w.get("/readyz") == "ready\n"
    metrics = w.get("/metrics")
    rounds = [float(ln.split()[-1]) for ln in metrics.splitlines() if ln.startswith("p2p_bootstrap_rounds_total ")]
    assert rounds and rounds[0] >= 2, rounds
