"""The pod image run the way Kubernetes runs it: read-only root, uid 10001 by default, no capabilities, no new
privileges, the data dir and /tmp the only writable places; HEALTHCHECK, SIGTERM, and the console one-liner
beside the running node.

Runs when the image (./build.sh) is present and built from this tree; otherwise skips saying so. ./test.sh builds
it before a full run; ``P2P_FAST_BUILD_IMAGE=1`` builds it here first (under a minute with cached layers, about
6 min from nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from k8s_render import REPO
from podcluster import DEFAULT_IMAGE, image_problem, podman

pytestmark = pytest.mark.image

# The worker configuration exactly as the system's description shows it (no data_dir, no bootstrap address).
SEED_WORKER_YAML = """\
node:
  role: "worker"
  listen_port: 4001
  capabilities:
    - "compute"
    - "storage"
  max_connections: 100
  heartbeat_interval: 30

network:
  protocol_version: "p2p-network"
  mesh_network: true
  enable_mdns: true
  enable_relay: true
  connection_timeout: 30
"""
SEED_BOOTSTRAP_YAML = """\
node:
  role: "bootstrap"
  listen_port: 4001
  capabilities:
    - "bootstrap"
    - "discovery"
  max_connections: 500
  heartbeat_interval: 10

network:
  protocol_version: "p2p-network"
  mesh_network: true
  enable_mdns: false
  enable_relay: false
  connection_timeout: 60
"""
BOOTSTRAP_NAME = "p2p-bootstrap.net-test.svc.cluster.local"

BOOTSTRAP_ONLY = """\
node: {role: bootstrap, listen_port: 4001, data_dir: /var/lib/p2p-fast, capabilities: [bootstrap]}
network: {enable_relay: false, bootstrap_peers: []}
http: {listen: "127.0.0.1:8080"}
"""


@pytest.fixture(scope="module")
def image() -> str:
    if os.environ.get("P2P_FAST_BUILD_IMAGE") == "1":
        t0 = time.monotonic()
        proc = subprocess.run([str(REPO / "build.sh"), "--tag", DEFAULT_IMAGE], capture_output=True, text=True,
                              timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        print(f"image built in {time.monotonic() - t0:.0f}s")
    problem = image_problem(DEFAULT_IMAGE)
    if problem:
        pytest.skip(f"{problem}; ./build.sh or P2P_FAST_BUILD_IMAGE=1 builds it")
    return DEFAULT_IMAGE


@pytest.fixture(scope="module")
def container(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One container for the module; the SIGTERM test (last) stops it."""
    cfg = tmp_path_factory.mktemp("image") / "config.yaml"
    cfg.write_text(BOOTSTRAP_ONLY)
    name = f"p2pf-image-test-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--name", name, "--network", "none", "--no-healthcheck",
           "--read-only", "--cap-drop", "all", "--security-opt", "no-new-privileges",
           "--mount", "type=tmpfs,destination=/var/lib/p2p-fast,U=true",
           "-v", f"{cfg}:/app/config.yaml:ro", "--label", "p2p-fast.testbed=image-test", image)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if exec_(name, "test", "-s", "/var/lib/p2p-fast/node.json").returncode == 0:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the node did not start:\n" + podman("logs", name, check=False).stderr[-3000:])
        yield name
    finally:
        podman("rm", "-f", "--ignore", name, check=False)


def exec_(name: str, *argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return podman("exec", *(["-i"] if input is not None else []), name, *argv, input=input, check=False, timeout=60)


def test_runs_as_uid_10001_with_a_read_only_root_and_compiled_extensions(container: str) -> None:
    assert exec_(container, "id", "-u").stdout.strip() == "10001"
    assert exec_(container, "touch", "/app/x").returncode != 0  # read-only root
    assert exec_(container, "touch", "/tmp/x", "/var/lib/p2p-fast/x").returncode == 0
    code = "import p2p_fast._ext as e, json; print(json.dumps([e.EXTENSIONS_ACTIVE, e.COMPILED]))"
    active, compiled = json.loads(exec_(container, "python3", "-c", code).stdout)
    assert active, compiled
    assert exec_(container, "sh", "-c", "command -v gcc cc pip").stdout.strip() == ""  # no toolchain at runtime


def test_healthcheck_and_console_beside_the_running_node(image: str, container: str) -> None:
    inspect = json.loads(podman("image", "inspect", image).stdout)[0]
    health = inspect.get("Healthcheck") or inspect.get("Config", {}).get("Healthcheck") or {}
    test = health.get("Test") or []
    assert test[:1] == ["CMD"] and "/healthz" in " ".join(test) + str(inspect), health
    probe = exec_(container, *test[1:])  # the HEALTHCHECK command itself, against the running node
    assert probe.returncode == 0, probe.stderr
    run = exec_(container, "sh", "-c", "cd /app && ./p2p-node --config /app/config.yaml", input="status\npeers\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "role:         bootstrap" in run.stdout and "ready:        yes" in run.stdout, run.stdout


def test_sigterm_stops_the_node_cleanly_and_fast(container: str) -> None:
    t0 = time.monotonic()
    podman("stop", "-t", "10", container, timeout=30)
    took = time.monotonic() - t0
    code = podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
    assert code == "0", podman("logs", container, check=False).stderr[-3000:]
    assert took < 6, f"SIGTERM to exit took {took:.1f}s"
    assert "received SIGTERM, stopping" in podman("logs", container, check=False).stderr


# --- `docker run -v $(pwd)/config.yaml:/app/config.yaml -p 4001:4001 <image>`, as the description has it --------------
# podman here; --network none instead of -p (podman's default bridge would leave NAT rules on this machine), so the
# port is checked from inside the container.

def test_repository_config_is_the_descriptions_worker_config_plus_a_bootstrap() -> None:
    seed = yaml.safe_load(SEED_WORKER_YAML)
    ours = yaml.safe_load((REPO / "config.yaml").read_text())
    for section, values in seed.items():
        for key, value in values.items():
            assert ours[section][key] == value, f"config.yaml {section}.{key}"
    extra = {f"{s}.{k}" for s, v in ours.items() for k in v if k not in seed.get(s, {})}
    assert extra == {"network.bootstrap_peers"}
    assert ours["network"]["bootstrap_peers"] == [f"/dns4/{BOOTSTRAP_NAME}/tcp/4001"]


def test_the_descriptions_configs_load_as_written(tmp_path: Path) -> None:
    from p2p_fast.core.config import load_config

    for role, text in (("worker", SEED_WORKER_YAML), ("bootstrap", SEED_BOOTSTRAP_YAML)):
        (tmp_path / f"{role}.yaml").write_text(text)
        cfg = load_config(tmp_path / f"{role}.yaml")
        assert cfg.node.role == role and cfg.node.listen_port == 4001 and cfg.network.protocol_version == "p2p-network"


def _run_plain(image: str, config: Path) -> str:
    name = f"p2pf-seed-run-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--name", name, "--network", "none", "-v", f"{config}:/app/config.yaml",
           "--label", "p2p-fast.testbed=image-test", image)
    return name


def _http(name: str, path: str) -> tuple[int, str]:
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen('http://127.0.0.1:8080' + sys.argv[1], timeout=5); print(r.status)\n"
            " print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")
    out = exec_(name, "python3", "-c", code, path)
    if out.returncode != 0:
        return 0, out.stderr
    status, _, body = out.stdout.partition("\n")
    return int(status), body


def _wait_started(name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if exec_(name, "test", "-s", "/var/lib/p2p-fast/node.json").returncode == 0 and _http(name, "/healthz")[0]:
            return
        time.sleep(0.3)
    pytest.fail("the node did not start:\n" + podman("logs", name, check=False).stderr[-3000:])


def test_plain_run_with_the_repository_config_says_why_it_is_not_ready(image: str) -> None:
    name = _run_plain(image, REPO / "config.yaml")
    try:
        _wait_started(name)
        # The data dir is the image's declared volume, writable by uid 10001 without any mount of ours.
        mounts = json.loads(podman("inspect", "--format", "{{json .Mounts}}", name).stdout)
        assert any(m["Destination"] == "/var/lib/p2p-fast" and m["Type"] == "volume" for m in mounts), mounts
        assert exec_(name, "stat", "-c", "%u", "/var/lib/p2p-fast").stdout.strip() == "10001"
        listens = exec_(name, "python3", "-c", "import json; print(json.load(open('/var/lib/p2p-fast/node.json'))"
                                                "['listen_addrs'])").stdout
        assert "/tcp/4001/p2p/" in listens, listens

        def why() -> str:
            status, body = _http(name, "/readyz")
            assert status == 503, (status, body)
            return body

        deadline = time.monotonic() + 60
        while "round(s)" not in why() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert f"/dns4/{BOOTSTRAP_NAME}/tcp/4001 (does not resolve)" in why()
        deadline = time.monotonic() + 30
        while "not ready: no bootstrap peer reachable" not in podman("logs", name).stderr:
            assert time.monotonic() < deadline, podman("logs", name).stderr[-3000:]
            time.sleep(0.5)
        assert BOOTSTRAP_NAME in podman("logs", name).stderr

        # The doctor inside the image, beside the running node (what `kubectl exec ... -- p2p-node doctor` runs).
        doc = exec_(name, "p2p-node", "doctor", "--config", "/app/config.yaml", "--timeout", "3")
        assert doc.returncode == 1, doc.stdout + doc.stderr
        assert f"[PROBLEM] bootstrap /dns4/{BOOTSTRAP_NAME}/tcp/4001: {BOOTSTRAP_NAME} does not resolve" in doc.stdout
        assert "[ok     ] listen port: 0.0.0.0:4001 is held by the node running on this data dir" in doc.stdout
        assert "[PROBLEM] gossip: subscribed" in doc.stdout and "no peer connected" in doc.stdout
    finally:
        podman("rm", "-f", "-v", "--ignore", name, check=False)


def test_plain_run_with_the_descriptions_config_verbatim(image: str, tmp_path: Path) -> None:
    """No data_dir, no bootstrap address: it runs (data in the volume), and its log says how it finds peers."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(SEED_WORKER_YAML)
    name = _run_plain(image, cfg)
    try:
        _wait_started(name)
        assert exec_(name, "test", "-s", "/var/lib/p2p-fast/identity.key").returncode == 0
        assert "no network.bootstrap_peers: this worker meets only peers that dial it or that mDNS finds" in (
            podman("logs", name).stderr)
        status, body = _http(name, "/readyz")
        assert (status, body.strip()) == (200, "ready")
    finally:
        podman("rm", "-f", "-v", "--ignore", name, check=False)
