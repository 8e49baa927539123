"""``p2p-node doctor`` where the seed's ``nslookup`` was: a short Kubernetes-style name served by the test bed's
cluster DNS (search domains from the namespace's resolv.conf), a headless Service with one A record per pod. Every
record is shown and every pod dialed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from harness import REPO, node_config

pytestmark = pytest.mark.netns


def _ns_config(role: str, **sections):
    cfg = node_config(role, **sections)
    cfg["node"]["listen_host"] = "0.0.0.0"
    cfg["node"]["listen_port"] = 4001
    return cfg


def _doctor_in(host, cfg: dict, tmp_path) -> subprocess.CompletedProcess[str]:
    """``p2p-node doctor`` with ``cfg`` (its data dir under ``tmp_path``) run inside ``host``'s namespace."""
    cfg["node"]["data_dir"] = str(tmp_path / "data")
    path = tmp_path / "doctor.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-m", "p2p_fast", "doctor",
                           "--config", str(path), "--timeout", "5"],
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))


def test_doctor_resolves_a_short_name_to_every_pod_and_dials_each(testbed, testbed_dns_ok, cluster, tmp_path):
    b1, b2, client = testbed.add_host("dboot1"), testbed.add_host("dboot2"), testbed.add_host("dclient")
    testbed.add_dns({"p2p-bootstrap": [b1.ip, b2.ip]})
    boots = [cluster.start_in(h, f"boot{i}", _ns_config("bootstrap")) for i, h in enumerate((b1, b2))]
    cfg = _ns_config("worker", network={"bootstrap_peers": ["/dns4/p2p-bootstrap/tcp/4001"]})
    proc = _doctor_in(client, cfg, tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    shown = next(ln for ln in out.splitlines() if ln.startswith("[ok     ] bootstrap /dns4/p2p-bootstrap/tcp/4001"))
    assert "(2 A record(s))" in shown and b1.ip in shown and b2.ip in shown
    for host, node in zip((b1, b2), boots):
        assert f"[ok     ] dial {host.ip}:4001: TCP, handshake, peer {node.peer_id}" in out, out


def test_doctor_sees_mdns_answers_on_a_lan(testbed, cluster, tmp_path):
    """mDNS on, on a LAN segment (a bridge between namespaces): multicast can leave, and a node that announces
    itself by mDNS answers the doctor's browse."""
    lan_node, client = testbed.add_host("mlan"), testbed.add_host("mclient")
    mdns = {"network": {"enable_mdns": True, "bootstrap_peers": []}}
    cluster.start_in(lan_node, "lan", _ns_config("worker", **mdns))
    proc = _doctor_in(client, _ns_config("worker", **mdns), tmp_path)
    mdns_line = next(ln for ln in proc.stdout.splitlines() if "] mdns:" in ln)
    assert mdns_line.startswith("[ok     ] mdns: on; multicast routable; 1 p2p service(s) answered"), proc.stdout
    assert "[ok     ] bootstrap: none configured: peers come from mDNS" in proc.stdout
