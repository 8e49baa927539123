"""The k8s/ deployment's behaviour on a cluster emulated on one machine (podcluster.py): DNS discovery, scaling,
pod failures, a network partition, and a client behind a NAT.

Pods run the real entrypoint with the ConfigMap content of k8s/base/config (the production configs: heartbeats of
10-30 s, no test speed-ups), so the waits here are what a cluster operator would see.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
import yaml
from podcluster import (
    BOOTSTRAP_SVC,
    DOMAIN,
    WORKER_SVC,
    Pod,
    PodCluster,
    eventually,
    lookup,
    podman,
    submit_tasks,
    wait_tasks,
)

pytestmark = [pytest.mark.netns, pytest.mark.podcluster]


OFFICE_CLIENT = """
import json, sys
import httpx
relay, other = sys.argv[1], sys.argv[2]
with httpx.Client(base_url=relay, timeout=60) as client:
    r = client.post("/v1/tasks/batch", json={"tasks": [
        {"type": "compute", "payload": f"sha256 10000 office-{i}"} for i in range(10)]})
    assert r.status_code == 202, r.text
    r = client.post("/v1/tasks/lookup", json={"ids": r.json()["ids"], "wait_s": 45})
    assert r.status_code == 200, r.text
try:
    httpx.get(other + "/healthz", timeout=2)
    raise SystemExit("the office firewall let a connection to another pod through")
except httpx.HTTPError:
    pass
print(json.dumps(r.json()["tasks"]))
"""


def _resolve(pod: Pod, name: str) -> list[str]:
    """getaddrinfo inside the pod's namespace (its resolv.conf: cluster DNS, search domains)."""
    # getaddrinfo reads /etc/resolv.conf of the mount namespace: run it in a process inside the pod's netns.
    code = ("import socket,sys,json; print(json.dumps(sorted({i[4][0] for i in socket.getaddrinfo(sys.argv[1], None, "
            "socket.AF_INET, socket.SOCK_STREAM)})))")
    out = pod.host.run([sys.executable, "-c", code, name], timeout=20).stdout
    return yaml.safe_load(out)


def _compute_workers(pod: Pod) -> set[str]:
    return set(pod.get("/v1/capabilities")["network"].get("compute", []))


def _connected_workers(c: PodCluster, pod: Pod, ids: dict[str, Pod]) -> set[str]:
    return {pid for pid in pod.peer_ids() if pid in ids}


def _console(pod: Pod, line: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``echo LINE | p2p-node --config /app/config.yaml`` inside the pod, beside its running node (README.md, "The
    original description's commands, here")."""
    if pod.container:
        return podman("exec", "-i", pod.container, "sh", "-c", "cd /app && ./p2p-node --config /app/config.yaml",
                      input=line + "\n", timeout=timeout, check=False)
    argv = [str(pod.proc.argv[0]), *pod.proc.argv[1:]] if pod.proc else []
    return pod.host.run(argv, input=line + "\n", timeout=timeout, check=False)


# --- discovery ------------------------------------------------------------------------------------------------------

def test_workers_find_the_bootstrap_by_its_service_name(kube: PodCluster) -> None:
    boot, relay, workers = kube.bootstrap, kube.relay, kube.workers
    w0 = workers[0]
    # Cluster DNS as a pod sees it: the Service by short name (search domains) and FQDN, the headless Service
    # with one A record per worker pod, and each pod's own name.
    assert _resolve(w0, BOOTSTRAP_SVC) == [boot.ip]
    assert _resolve(w0, f"{BOOTSTRAP_SVC}.{DOMAIN}") == [boot.ip]
    assert _resolve(w0, WORKER_SVC) == sorted(w.ip for w in workers)
    assert _resolve(boot, f"{workers[2].name}.{WORKER_SVC}") == [workers[2].ip]

    # The configs name the bootstrap only as /dns4/p2p-bootstrap.net-test.svc.cluster.local/tcp/4001.
    cfg = yaml.safe_load(w0.config_path.read_text())
    assert cfg["network"]["bootstrap_peers"] == [f"/dns4/{BOOTSTRAP_SVC}.{DOMAIN}/tcp/4001"]
    ids = kube.peer_ids(workers)
    eventually(lambda: set(ids) | {relay.peer_id} <= boot.peer_ids(), 30,
               "every worker and the relay to be connected to the bootstrap")
    for w in workers:
        assert boot.peer_id in w.peer_ids()
    # What the network knows about capabilities follows from the advertisements.
    eventually(lambda: set(ids) <= _compute_workers(boot), 30, "the bootstrap to see 3 compute workers")

    # The system's one-liner, in a worker pod beside its running node: the second p2p-node drives the running one.
    proc = _console(w0, "task compute test_payload")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "completed by " in proc.stdout, proc.stdout


def test_bootstrap_keeps_its_identity_across_restarts_and_workers_come_back(kube: PodCluster) -> None:
    boot = kube.bootstrap
    before = boot.peer_id
    ids = kube.peer_ids(kube.workers)
    boot.kill()
    boot.start().wait_ready(60)
    assert boot.peer_id == before, "the bootstrap's peer ID comes from the Secret and must not change"
    # Workers re-bootstrap by DNS name (no peer ID in the address) and find the same bootstrap again.
    eventually(lambda: set(ids) <= boot.peer_ids(), 60, "every worker to reconnect to the restarted bootstrap")


# --- scaling --------------------------------------------------------------------------------------------------------

def test_scaling_workers_3_to_8_to_2_the_network_follows(kube: PodCluster) -> None:
    boot = kube.bootstrap
    t0 = time.monotonic()
    kube.scale("worker", 8)
    workers = kube.workers
    assert len(workers) == 8
    print(f"8 workers ready after {time.monotonic() - t0:.1f}s")
    assert sorted(kube.dns.query(WORKER_SVC)) == sorted(w.ip for w in workers)
    ids = kube.peer_ids(workers)
    eventually(lambda: set(ids) <= boot.peer_ids(), 60, "the bootstrap to connect to all 8 workers")
    eventually(lambda: set(ids) <= _compute_workers(boot), 60, "the bootstrap to see 8 compute workers")
    print(f"network has 8 workers after {time.monotonic() - t0:.1f}s")

    # Work spreads over the new workers.
    task_ids = submit_tasks(boot, [{"type": "compute", "payload": f"sha256 20000 job-{i}"} for i in range(48)])
    docs = wait_tasks(boot, task_ids, timeout=90)
    assert Counter(d["state"] for d in docs) == {"completed": 48}, [d for d in docs if d["state"] != "completed"]
    used = Counter(ids[d["worker"]].name for d in docs)
    assert len(used) >= 4, f"48 tasks went to only {dict(used)}"

    t1 = time.monotonic()
    kube.scale("worker", 2)
    remaining = kube.peer_ids(kube.workers)
    gone = set(ids) - set(remaining)
    assert len(remaining) == 2 and len(gone) == 6
    assert sorted(kube.dns.query(WORKER_SVC)) == sorted(w.ip for w in kube.workers)
    eventually(lambda: not (gone & boot.peer_ids()), 30, "the bootstrap to drop the 6 removed workers")
    print(f"scaled down to 2 in {time.monotonic() - t1:.1f}s")
    # New work runs only on what is left (a stale capability record of a removed worker costs a retry, no more).
    task_ids = submit_tasks(boot, [{"type": "compute", "payload": f"sha256 20000 after-{i}"} for i in range(16)])
    docs = wait_tasks(boot, task_ids, timeout=120)
    assert Counter(d["state"] for d in docs) == {"completed": 16}, [d for d in docs if d["state"] != "completed"]
    assert {d["worker"] for d in docs} <= set(remaining)


# --- failures -------------------------------------------------------------------------------------------------------

def test_tasks_keep_completing_while_a_worker_pod_is_killed(kube: PodCluster) -> None:
    boot = kube.bootstrap
    victim = kube.workers[1]
    ids = kube.peer_ids(kube.workers)
    victim_id = victim.peer_id
    # A stream of work (about 0.8 s of CPU each, 2 slots per worker), the victim killed in the middle.
    batch = [{"type": "compute", "payload": f"sha256 1000000 kill-{i}", "max_retries": 5} for i in range(18)]
    first = submit_tasks(boot, batch[:9])
    eventually(lambda: any(d["state"] == "running" and d["worker"] == victim_id
                           for d in lookup(boot, first, results=False)), 30,
               "a task to be running on the victim")
    killed_at = time.time()
    victim.kill()
    second = submit_tasks(boot, batch[9:])
    docs = wait_tasks(boot, first + second, timeout=150)
    failed = [d for d in docs if d["state"] != "completed"]
    assert not failed, failed
    # Whatever the victim was running was retried elsewhere; nothing completed there after it died.
    assert all(not (d["worker"] == victim_id and (d["finished"] or 0) > killed_at + 1) for d in docs)
    retried = [d for d in docs if any(a["worker"] == victim_id and a["outcome"] != "ok"
                                      for a in d["attempts"])]
    assert retried, "no task was running on the victim when it was killed"
    assert all(d["worker"] != victim_id for d in retried)

    # The pod comes back (the kubelet restarts the container; the data dir survives): same identity, rejoins.
    victim.start().wait_ready(60)
    assert victim.peer_id == victim_id
    eventually(lambda: victim_id in boot.peer_ids(), 30, "the restarted worker to rejoin")
    assert set(ids) <= boot.peer_ids()


def test_a_cut_off_worker_costs_retries_not_tasks_and_rejoins(kube: PodCluster) -> None:
    boot = kube.bootstrap
    victim = kube.workers[2]
    victim_id = victim.peer_id
    victim.cut_off()
    try:
        # 3 s per attempt: an attempt sent into the partition times out and is retried on a reachable worker.
        batch = [{"type": "compute", "payload": f"sha256 20000 cut-{i}", "timeout_s": 3, "max_retries": 5}
                 for i in range(20)]
        docs = wait_tasks(boot, submit_tasks(boot, batch), timeout=120)
        assert all(d["state"] == "completed" for d in docs), [d for d in docs if d["state"] != "completed"]
        assert all(d["worker"] != victim_id for d in docs)
    finally:
        victim.reconnect()
    eventually(lambda: victim.is_ready() and victim_id in boot.peer_ids(), 60, "the cut-off worker to rejoin")


# --- outside the cluster --------------------------------------------------------------------------------------------

def test_outsider_behind_nat_submits_tasks_through_the_relay(kube: PodCluster) -> None:
    relay = kube.relay
    worker_ids = kube.peer_ids(kube.workers)

    # An office network whose firewall lets through only the relay's address (as exposed by the production
    # overlay's LoadBalancer): the outsider submits through the relay's task API; the relay hands the tasks to
    # the cluster's workers over libp2p.
    office, laptop = kube.add_outsider("office")
    office.iptables("-I", "FORWARD", "1", "-i", office.lan_iface, "-o", office.uplink, "!", "-d", relay.ip,
                    "-j", "DROP")

    # The client runs in the office (a process in its namespace): submit, wait, and show the firewall holds.
    out = laptop.python(OFFICE_CLIENT, relay.url, kube.bootstrap.url, timeout=120).stdout
    docs = json.loads(out.strip().splitlines()[-1])
    assert [d["state"] for d in docs] == ["completed"] * 10, docs
    assert {d["worker"] for d in docs} <= set(worker_ids)

    # A home network (MASQUERADE, nothing gets in): the outsider runs its own node with no capabilities, joins
    # through the relay, finds itself private (AutoNAT) and reserves a slot on the relay; its tasks run on the
    # cluster's workers.
    home, pc = kube.add_outsider("home")
    cfg = yaml.safe_load((kube.workdir / "p2p-worker-0" / "config.yaml").read_text())
    relay_addr = f"/ip4/{relay.ip}/tcp/4001/p2p/{relay.peer_id}"
    cfg["node"]["capabilities"] = []
    cfg["node"]["data_dir"] = str(kube.workdir / "outsider-data")
    cfg["network"].update({"bootstrap_peers": [relay_addr], "relay_addrs": [relay_addr], "enable_mdns": False,
                           "connection_timeout": 5})
    cfg["http"]["listen"] = "127.0.0.1:8080"
    path = kube.workdir / "outsider.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exe = [sys.executable, "-m", "p2p_fast", "--config", str(path)]
    outsider = Pod(kube, "outsider-0", "worker", pc)
    outsider.proc = pc.spawn(exe, name="outsider", env=None)
    outsider.ip = "127.0.0.1"  # its API listens on its own loopback
    try:
        _outsider_tasks(kube, outsider, home, relay_addr, worker_ids)
    finally:
        outsider.proc.terminate(10)


def _outsider_tasks(kube: PodCluster, outsider: Pod, home: Any, relay_addr: str, worker_ids: dict[str, Pod]) -> None:
    relay = kube.relay
    outsider.wait_ready(60)
    me = outsider.peer_id

    seen = eventually(lambda: next((p for p in relay.get("/v1/peers") if p["peer_id"] == me), None), 30,
                      "the relay to see the outsider")
    assert seen["addr"].startswith(f"/ip4/{home.wan_ip}/tcp/"), seen  # through the NAT
    task_ids = submit_tasks(outsider, [{"type": "compute", "payload": f"sha256 10000 home-{i}"} for i in range(10)])
    docs = wait_tasks(outsider, task_ids, timeout=90)
    assert [d["state"] for d in docs] == ["completed"] * 10, docs
    assert {d["worker"] for d in docs} <= set(worker_ids)
    nat = eventually(lambda: (n := outsider.status().get("nat")) and n.get("relayed_addrs") and n, 45,
                     "the outsider to find itself private and hold a reservation on the relay")
    assert nat["reachability"] == "private", nat
    assert nat["relayed_addrs"] == [f"{relay_addr}/p2p-circuit/p2p/{me}"], nat
    # Which way its tasks went: the workers are reachable from the home network, so the outsider dials them
    # directly (outbound through the NAT); they see it at the NAT's address, not through the relay.
    w0 = kube.workers[0]
    conn = next((p for p in w0.get("/v1/peers") if p["peer_id"] == me), None)
    if conn is not None:
        assert conn["addr"].startswith(f"/ip4/{home.wan_ip}/tcp/") or conn["relayed"], conn


def test_doctor_in_a_worker_pod_passes_on_the_healthy_cluster(kube: PodCluster) -> None:
    """`kubectl exec <worker> -- p2p-node doctor --config /app/config.yaml`, in the emulated cluster: the
    bootstrap Service's name through the cluster DNS, the dial, the pod's own running node (mesh, clock)."""
    pod = kube.workers[0]
    eventually(lambda: pod.status()["peers"] >= 2 and all(n >= 1 for n in pod.status()["topics"].values()), 90,
               "the worker's gossip mesh")
    if pod.container:
        proc = podman("exec", pod.container, "p2p-node", "doctor", "--config", "/app/config.yaml", check=False,
                      timeout=120)
    else:  # pods as processes: the same config, the node's data dir given on its command line, so --api
        proc = pod.host.run([sys.executable, "-m", "p2p_fast", "doctor", "--config", str(pod.config_path),
                             "--api", pod.url], check=False, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    boot = kube.bootstrap
    assert f"{BOOTSTRAP_SVC}.{DOMAIN} -> {boot.ip} (1 A record(s))" in out, out
    assert f"[ok     ] dial {boot.ip}:4001: TCP, handshake, peer {boot.peer_id}" in out, out
    assert "[ok     ] gossip: " in out and "[ok     ] mdns: network.enable_mdns is false" in out
