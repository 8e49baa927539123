"""The connection manager in real node processes: with small watermarks a bootstrap that every worker joins through
prunes down, a peer running a task for it stays connected (protected), and discovery does not dial the network back
into a full mesh."""

from __future__ import annotations

import re
import time

import httpx

from harness import node_config, wait_until

N_WORKERS = 6
LIMITS = {"conn_low": 2, "conn_high": 3, "conn_grace_period": 1}
SMALL_MESH = {"degree": 2, "degree_low": 1, "degree_high": 3}
PRUNED = re.compile(r'^p2p_connections_pruned_total\{reason="watermark"\} (\d+(?:\.\d+)?)', re.M)


def pruned(node) -> float:
    m = PRUNED.search(httpx.get(node.http + "/metrics", timeout=5).text)
    return float(m.group(1)) if m else 0.0


def peer_ids(node) -> set[str]:
    return {p["peer_id"] for p in node.peers()}


def test_the_node_prunes_to_its_watermarks_keeps_protected_peers_and_no_full_mesh_returns(cluster):
    boot = cluster.add("boot", node_config("bootstrap", network={**LIMITS, "dht_mode": "client"}, gossip=SMALL_MESH,
                                           node={"capabilities": ["bootstrap"]})).start().wait_started(90)
    # No DHT servers: a Kademlia lookup (e.g. the task service's provider records, at 2, 10, 30 and 120 s) dials
    # the peers closest to its key, and in a network of 7 that is everyone, so lookups alone connect everybody for
    # a while (trimmed after the grace period, as go-libp2p's are). What is tested here is that discovery does not.
    workers = [cluster.add(f"w{i}", node_config("worker", network={**LIMITS, "bootstrap_peers": [boot.addr()],
                                                                   "dht_mode": "client"},
                                                gossip=SMALL_MESH)).start()
               for i in range(N_WORKERS)]
    for w in workers:  # started together (a join storm), each given long enough on a loaded machine
        w.wait_started(90)
    nodes = [boot, *workers]
    wait_until(lambda: all(w.status()["live_peers"] >= 1 for w in workers), 60, "every worker to see a live peer")

    # A task from the bootstrap to a worker: the worker running it must stay connected while it runs.
    client = httpx.Client(base_url=boot.http, timeout=30)
    try:
        r = client.post("/v1/tasks", json={"type": "sleep", "payload": "15", "timeout_s": 90, "max_retries": 0})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        running = wait_until(lambda: (lambda d: d if d["state"] == "running" and d["worker"] else None)(
            client.get(f"/v1/tasks/{task_id}").json()), 30, "the task to start on a worker")
        runner = running["worker"]

        wait_until(lambda: pruned(boot) >= 1, 60, "the bootstrap to prune above its high watermark")
        assert client.get(f"/v1/tasks/{task_id}").json()["state"] == "running"  # pruned while the task runs
        deadline = time.monotonic() + 120
        while client.get(f"/v1/tasks/{task_id}").json()["state"] == "running" and time.monotonic() < deadline:
            assert runner in peer_ids(boot), "the worker running our task was disconnected"
            time.sleep(0.3)
        done = client.get(f"/v1/tasks/{task_id}", params={"wait": 30}).json()
        assert done["state"] == "completed", done
    finally:
        client.close()

    # The join storm connected every worker to the bootstrap; pruned, the network settles near the watermarks and
    # discovery (adverts, the connector, the bootstrapper, py-libp2p's auto-dialer) does not rebuild a full mesh.
    high = LIMITS["conn_high"]
    wait_until(lambda: sum(len(peer_ids(n)) for n in nodes) <= high * len(nodes), 90,
               f"at most {high} peers per node on average")
    most = {n.name: 0 for n in nodes}
    for _ in range(15):
        for n in nodes:
            most[n.name] = max(most[n.name], len(peer_ids(n)))
        time.sleep(0.3)
    print("most peers seen per node after settling:", most)
    assert max(most.values()) < len(nodes) - 1, most
    assert all(n.proc is not None and n.proc.poll() is None for n in nodes)
    errors = [line for n in nodes for line in (n.lines + n.stderr_path.read_text(errors="replace").splitlines())
              if " ERROR " in line or "Traceback" in line]
    assert errors == []
