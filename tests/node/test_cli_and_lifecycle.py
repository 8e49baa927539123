"""The p2p-node command: config errors, port conflicts, piped console, signals, health endpoints, logs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from harness import REPO, node_config, wait_until


def run_node(args, stdin_text: str | None = None, timeout: float = 60, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "p2p_fast", *args], input=(stdin_text or "").encode(),
                          capture_output=True, timeout=timeout, cwd=str(REPO), env={**os.environ, **(env or {})})


@pytest.mark.parametrize("body, key, problem", [
    ("node:\n  role: worker\n  listen_prot: 4001\n", "node.listen_prot", "unknown key"),
    ("nodes:\n  role: worker\n", "nodes", "unknown key"),
    ("node:\n  listen_port: '4001'\n", "node.listen_port", "must be an integer"),
    ("node:\n  capabilities: compute\n", "node.capabilities", "must be a list"),
    ("network:\n  enable_mdns: 'yes'\n", "network.enable_mdns", "must be true or false"),
    ("node:\n  listen_port: 70000\n", "node.listen_port", "must be <= 65535"),
    ("node:\n  max_connections: 0\n", "node.max_connections", "must be >= 1"),
    ("node:\n  role: miner\n", "node.role", "must be one of bootstrap, relay, worker"),
    ("network:\n  bootstrap_peers: ['/ip4/127.0.0.1']\n", "network.bootstrap_peers[0]", "missing /tcp/<port>"),
    ("network:\n  security: [noise, ssl]\n", "network.security[1]", "must be one of noise, tls"),
    ("gossip:\n  degree: 20\n", "gossip.degree", "degree_low <= degree <= degree_high"),
    ("gossip:\n  lazy_degree: -1\n", "gossip.lazy_degree", "must be >= 0"),
    ("gossip:\n  gossip_window: 0\n", "gossip.gossip_window", "must be >= 1"),
    ("http:\n  listen: localhost\n", "http.listen", "HOST:PORT"),
    ("network:\n  conn_low: 30\n  conn_high: 20\n", "network.conn_low", "must be <= network.conn_high"),
    ("network:\n  conn_grace_period: -1\n", "network.conn_grace_period", "must be >= 0"),
    ("node: [unclosed\n", "", "not valid YAML"),
])
def test_config_errors_exit_2_naming_file_key_and_problem(tmp_path, body, key, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    res = run_node(["--config", str(path), "--console", "off"], timeout=30)
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert str(path) in err and key in err and problem in err, err
    assert "Traceback" not in err


def test_missing_config_file_and_bad_flag(tmp_path):
    res = run_node(["--config", str(tmp_path / "nope.yaml")], timeout=30)
    assert res.returncode == 2 and "file not found" in res.stderr.decode()
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(yaml.safe_dump(node_config("worker")))
    res = run_node(["--config", str(cfg), "--listen-port", "99999"], timeout=30)
    assert res.returncode == 2 and "node.listen_port" in res.stderr.decode()


def test_every_shipped_role_config_is_valid():
    from p2p_fast.core.config import load_config

    for role in ("bootstrap", "relay", "worker"):
        cfg = load_config(REPO / "node" / f"{role}.yaml")
        assert cfg.node.role == role


def test_listen_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        cfg = tmp_path / "w.yaml"
        cfg.write_text(yaml.safe_dump(node_config("worker")))
        res = run_node(["--config", str(cfg), "--listen-port", str(port), "--data-dir", str(tmp_path / "d"),
                        "--console", "off"], timeout=30)
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert f"listen port {port}" in err and "already in use" in err and "Traceback" not in err


def test_piped_console_runs_commands_in_order_and_exits_0(tmp_path, cluster):
    boot = cluster.start("boot", node_config("bootstrap"))
    cfg = tmp_path / "w.yaml"
    cfg.write_text(yaml.safe_dump(node_config("worker", network={"bootstrap_peers": [boot.addr(with_id=False)]})))
    res = run_node(["--config", str(cfg), "--data-dir", str(tmp_path / "d")],
                   stdin_text="help\nstatus\npeers\ncapabilities\n", timeout=60)
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert out.index("commands:") < out.index("role:         worker") < out.index("connected peer(s)")
    assert boot.peer_id in out
    assert "this node (worker): compute, storage" in out


def test_piped_unknown_command_exits_1_with_message(tmp_path):
    cfg = tmp_path / "w.yaml"
    cfg.write_text(yaml.safe_dump(node_config("bootstrap")))
    res = run_node(["--config", str(cfg), "--data-dir", str(tmp_path / "d")], stdin_text="frobnicate\n")
    assert res.returncode == 1
    assert "unknown command 'frobnicate'" in res.stdout.decode()


def test_sigterm_stops_within_5s_with_exit_0_and_health_endpoints(cluster):
    boot = cluster.start("boot", node_config("bootstrap"))
    w = cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
    assert httpx.get(w.http + "/healthz").text == "ok\n"
    wait_until(lambda: httpx.get(w.http + "/readyz").status_code == 200, 30, "worker ready")
    metrics = httpx.get(w.http + "/metrics").text
    for name in ("p2p_peers", "p2p_messages_in_total", "p2p_ping_rtt_seconds_bucket", "p2p_dial_failures_total",
                 "swarm_dial_attempt"):
        assert name in metrics, name
    wait_until(lambda: 'p2p_messages_in_total{topic="p2p-network/capabilities"}' in httpx.get(w.http + "/metrics").text,
               20, "presence messages counted")
    # py-libp2p's own per-RPC gossipsub metric, recorded inline (no consumer task, nothing blocks the swarm)
    received = re.compile(r'^gossipsub_received_total\{peer_id="\w+"\} [1-9]', re.M)
    wait_until(lambda: received.search(httpx.get(w.http + "/metrics").text), 20, "py-libp2p's gossipsub metric")
    start = time.monotonic()
    assert w.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - start < 5
    assert boot.stop(signal.SIGINT, timeout=10) == 0


def test_readyz_is_503_while_bootstrap_unreachable(cluster):
    with socket.socket() as s:  # a port with nobody behind it
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    missing = "/dns4/no-such-bootstrap.invalid/tcp/4001"
    w = cluster.start("w", node_config("worker", network={"bootstrap_peers": [f"/ip4/127.0.0.1/tcp/{dead}",
                                                                             missing]}))
    r = httpx.get(w.http + "/readyz")
    assert r.status_code == 503 and "not ready" in r.text
    wait_until(lambda: 'p2p_dial_failures_total{reason="probe"}' in httpx.get(w.http + "/metrics").text, 20,
               "dial failures counted")
    # /readyz and the log say why: every address tried, and what it did.
    wait_until(lambda: "round(s)" in httpx.get(w.http + "/readyz").text, 20, "a reason after the first round")
    why = httpx.get(w.http + "/readyz").text
    assert why.startswith("not ready: no bootstrap peer reachable after")
    assert f"/ip4/127.0.0.1/tcp/{dead} (/ip4/127.0.0.1/tcp/{dead}: cannot connect" in why, why
    assert f"{missing} (does not resolve)" in why, why
    wait_until(lambda: "not ready: no bootstrap peer reachable" in w.stderr(), 20, "the not-ready warning")
    assert "p2p-node doctor" in w.stderr()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_logging_includes_py_libp2p(cluster, how):
    """``--log-level debug`` / ``P2P_LOG=debug`` (the description's ``RUST_LOG=debug``) shows the libp2p layer too:
    py-libp2p stops its loggers from propagating unless LIBP2P_DEBUG is set, so without our hook it stayed silent."""
    boot = cluster.start("boot", node_config("bootstrap"))
    kw = {"extra_args": ["--log-level", "debug"]} if how == "flag" else {"env": {"P2P_LOG": "debug"}}
    w = cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr()]}), **kw)
    wait_until(lambda: re.search(r" DEBUG +libp2p\.", w.stderr()), 20, "a py-libp2p debug line")
    assert re.search(r" DEBUG +p2p_fast\.", w.stderr()) or "DEBUG" in w.stderr()
    assert not re.search(r" DEBUG +libp2p\.", boot.stderr())  # info level stays quiet


def test_json_log_format(cluster):
    boot = cluster.start("boot", node_config("bootstrap"), extra_args=["--log-format", "json"])
    wait_until(lambda: "node up" in boot.stderr(), 10, "startup log line")
    lines = [ln for ln in boot.stderr().splitlines() if ln.startswith("{")]
    docs = [json.loads(ln) for ln in lines]
    up = next(d for d in docs if d["msg"].startswith("node up"))
    assert up["level"] == "info" and up["logger"] == "p2p_fast.app.node" and "ts" in up


def test_max_connections_is_enforced(cluster):
    boot = cluster.start("boot", node_config("bootstrap", node={"max_connections": 2}))
    workers = [cluster.start(f"w{i}", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
               for i in range(4)]
    wait_until(lambda: sum(1 for w in workers if boot.peer_id in {p["peer_id"] for p in w.peers()}) >= 2, 30,
               "two workers connected to the bootstrap")
    for _ in range(10):  # stays at the cap while the others keep trying
        assert boot.status()["connections"] <= 2
        time.sleep(0.3)


def test_second_p2p_node_on_a_running_nodes_config_drives_it_through_its_api(cluster):
    """As in a pod: `echo "task compute test_payload" | p2p-node --config /app/config.yaml` beside the running node."""
    boot = cluster.start("boot", node_config("bootstrap"))
    w = cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
    wait_until(lambda: w.status()["live_peers"] >= 1, 30, "worker to see the bootstrap")
    res = run_node(["--config", str(w.config_path), "--data-dir", str(w.data_dir)],
                   stdin_text="status\npeers\ncapabilities\ntask compute test_payload\n", timeout=90)
    out = res.stdout.decode()
    assert res.returncode == 0, out + res.stderr.decode()[-3000:]
    assert f"peer id:      {w.peer_id}" in out  # the running node's identity, not a new one
    assert boot.peer_id in out
    assert "this node (worker): compute, storage" in out
    assert "completed by" in out
    assert w.proc.poll() is None  # the running node is unaffected


def test_unusable_data_dir_is_a_clear_error(tmp_path):
    cfg = tmp_path / "w.yaml"
    cfg.write_text(yaml.safe_dump(node_config("worker")))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    res = run_node(["--config", str(cfg), "--data-dir", str(blocker / "data"), "--console", "off"], timeout=30)
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert "is not usable" in err and "Traceback" not in err
