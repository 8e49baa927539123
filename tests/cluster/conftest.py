"""The Kubernetes-like test-bed cluster (podcluster.py) as a module-scoped fixture.

One cluster per test module (a bootstrap, a relay, 3 workers, cluster DNS): starting pods is the expensive part.
Every test gets it back in that shape: the ``kube`` fixture restores 3 running, connected, ready workers after
each test. Pods are containers of the image built by ./build.sh when that image is present and built from this
tree (else processes with the same entrypoint and configs); P2P_FAST_POD_RUNTIME=process|podman forces one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from podcluster import PodCluster, remove_containers  # noqa: E402

from testing.testbed import Testbed, cleanup_stale  # noqa: E402
from testing.testbed.pytest_plugin import require_testbed  # noqa: E402

BASELINE_WORKERS = 3


@pytest.fixture(scope="module")
def kube_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodCluster]:
    require_testbed(dns=True)
    for bed_id in cleanup_stale():  # beds (and their containers) left by killed runs
        remove_containers(bed_id)
    with Testbed(label=f"{request.node.nodeid} (pod cluster)") as bed:
        cluster = PodCluster(bed, tmp_path_factory.mktemp("kube"))
        print(f"pod runtime: {cluster.runtime} ({cluster.runtime_reason})")
        try:
            cluster.deploy(workers=BASELINE_WORKERS)
            yield cluster
        finally:
            cluster.close()


@pytest.fixture
def kube(kube_cluster: PodCluster, request: pytest.FixtureRequest) -> Iterator[PodCluster]:
    """The module's cluster, restored to baseline after the test (links up, pods running, 3 workers ready)."""
    request.node._p2pf_testbed = kube_cluster.bed  # failure reports get the processes' log tails
    try:
        yield kube_cluster
    finally:
        request.node._p2pf_testbed = None
        c = kube_cluster
        for pod in c.pods.values():
            if not pod.host.link_is_up:
                pod.reconnect()
        for pod in c.live_pods():
            if not pod.running:
                pod.start()
        c.scale("worker", BASELINE_WORKERS, wait=False)
        for pod in c.live_pods():
            pod.wait_ready(90)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "podcluster: runs pods of k8s/ on the network test bed (root, netns)")
