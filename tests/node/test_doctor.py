"""``p2p-node doctor`` against real nodes on 127.0.0.1: a healthy network passes every check; a wrong bootstrap
name, a closed port, another protocol_version and another PSK are each named as the problem they are."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness import REPO, Cluster, node_config, wait_until

PSK_A = "a1" * 32
PSK_B = "b2" * 32


def doctor(tmp_path: Path, cfg: dict[str, Any], name: str = "doctor.yaml",
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "p2p_fast", "doctor", "--config", str(path), "--timeout", "5"],
                          capture_output=True, text=True, timeout=120, cwd=str(REPO),
                          env={**os.environ, **(env or {})})


def line(out: str, start: str) -> str:
    found = [ln for ln in out.splitlines() if ln.startswith(start)]
    assert found, f"no line starting {start!r} in:\n{out}"
    return "\n".join(found)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once this socket is closed


def test_doctor_passes_on_a_healthy_network(cluster: Cluster, tmp_path: Path) -> None:
    boot = cluster.start("boot", node_config("bootstrap"))
    relay = cluster.start("relay", node_config("relay", network={"bootstrap_peers": [boot.addr()]}))
    port = boot.addr(with_id=False).split("/tcp/")[1]
    # By name (/etc/hosts), as a cluster names its bootstrap Service: the doctor shows what the name resolves to.
    worker_cfg = node_config("worker", network={"bootstrap_peers": [f"/dns4/localhost/tcp/{port}"],
                                                "relay_addrs": [relay.addr()],
                                                "rebootstrap_interval": 1, "enable_mdns": False,
                                                "connection_timeout": 10})
    worker = cluster.start("worker", worker_cfg)

    def meshed() -> bool:
        status, peers = worker.status(), worker.peers()
        return (all(n >= 1 for n in status["topics"].values()) and len(status["topics"]) >= 2
                and any(p.get("clock_offset_s") is not None for p in peers))

    wait_until(meshed, 40, "the worker's gossip mesh and a peer advertisement with a timestamp")
    # The doctor reads the worker's own config (its data dir names the running node).
    cfg = {**worker_cfg, "node": {**worker_cfg["node"], "data_dir": str(worker.data_dir),
                                  "listen_port": int(worker.addr(with_id=False).split("/tcp/")[1])}}
    proc = doctor(tmp_path, cfg)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "localhost -> 127.0.0.1" in line(out, "[ok     ] bootstrap /dns4/localhost")
    assert f"peer {boot.peer_id}, protocol_version 'p2p-network'" in line(out, f"[ok     ] dial 127.0.0.1:{port}")
    assert "held by the node running on this data dir" in line(out, "[ok     ] listen port")
    relay_port = relay.addr(with_id=False).split("/tcp/")[1]
    assert f"peer {relay.peer_id}" in line(out, f"[ok     ] dial 127.0.0.1:{relay_port}")  # serves the hop protocol
    gossip = line(out, "[ok     ] gossip")
    for topic in ("gossip", "capabilities"):
        assert re.search(rf"p2p-network/{topic} mesh [12]\b", gossip), gossip
    assert "largest offset" in line(out, "[ok     ] clock")
    assert out.rstrip().endswith("doctor: all checks passed")


def test_doctor_names_a_wrong_name_a_closed_port_and_another_protocol_version(cluster: Cluster,
                                                                               tmp_path: Path) -> None:
    other = cluster.start("other", node_config("bootstrap", network={"protocol_version": "other-net"}))
    closed = closed_port()
    cfg = node_config("worker", network={"bootstrap_peers": [
        "/dns4/no-such-bootstrap.invalid/tcp/4001", f"/ip4/127.0.0.1/tcp/{closed}", other.addr(with_id=False)]})
    cfg["node"]["data_dir"] = str(tmp_path / "data")
    proc = doctor(tmp_path, cfg)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "no-such-bootstrap.invalid does not resolve: no such name" in line(
        out, "[PROBLEM] bootstrap /dns4/no-such-bootstrap.invalid")
    assert "closed port" in line(out, f"[PROBLEM] dial 127.0.0.1:{closed}")
    port = other.addr(with_id=False).split("/tcp/")[1]
    assert ("speaks protocol_version 'other-net', this config 'p2p-network'"
            in line(out, f"[PROBLEM] dial 127.0.0.1:{port}"))
    assert "what to do: set the same network.protocol_version" in out
    assert "doctor: 3 problem(s)" in out


def test_doctor_names_a_psk_mismatch(cluster: Cluster, tmp_path: Path) -> None:
    key = tmp_path / "swarm.key"
    key.write_text(f"/key/swarm/psk/1.0.0/\n/base16/\n{PSK_A}\n")
    private = cluster.start("private", node_config("bootstrap", network={"psk_file": str(key)}))
    cfg = node_config("worker", network={"bootstrap_peers": [private.addr(with_id=False)]})
    cfg["node"]["data_dir"] = str(tmp_path / "data")
    port = private.addr(with_id=False).split("/tcp/")[1]
    proc = doctor(tmp_path, cfg, env={"P2P_PSK": PSK_B})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "PSK mismatch" in line(proc.stdout, f"[PROBLEM] dial 127.0.0.1:{port}")
    proc = doctor(tmp_path, cfg, env={"P2P_PSK": PSK_A})  # the right key: the same dial passes
    assert f"[ok     ] dial 127.0.0.1:{port}: TCP, handshake inside the PSK" in proc.stdout, proc.stdout


def test_doctor_bad_config_and_busy_port(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node:\n  role: worker\n  listen_prot: 4001\n")
    proc = subprocess.run([sys.executable, "-m", "p2p_fast", "doctor", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert proc.returncode == 1 and "node.listen_prot: unknown key" in line(proc.stdout, "[PROBLEM] config")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = node_config("bootstrap")
        cfg["node"].update(listen_port=busy.getsockname()[1], data_dir=str(tmp_path / "data"))
        proc = doctor(tmp_path, cfg)
    assert proc.returncode == 1
    assert "in use by another process" in line(proc.stdout, "[PROBLEM] listen port")


def test_doctor_relay_without_the_hop_protocol_and_mdns_in_kubernetes(cluster: Cluster, tmp_path: Path) -> None:
    not_relay = cluster.start("plain", node_config("bootstrap"))  # reachable, but serves no circuit relay hop
    cfg = node_config("bootstrap", network={"relay_addrs": [not_relay.addr()], "enable_mdns": True})
    cfg["node"]["data_dir"] = str(tmp_path / "data")
    proc = doctor(tmp_path, cfg, env={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    port = not_relay.addr(with_id=False).split("/tcp/")[1]
    assert "does not serve /libp2p/circuit/relay/0.2.0/hop" in line(out, f"[PROBLEM] dial 127.0.0.1:{port}")
    assert "inside Kubernetes" in line(out, "[PROBLEM] mdns")
