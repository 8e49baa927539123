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
from k8s_render import REPO
from podcluster import DEFAULT_IMAGE, image_problem, podman

pytestmark = pytest.mark.image

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
