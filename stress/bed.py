"""Run a command (locust) against the Kubernetes-like test-bed cluster, then tear the cluster down.

    python stress/bed.py --workers 3 [--runtime auto|process|podman] [--targets services|all] -- locust ...

Builds the cluster of tests/cluster/podcluster.py (network namespaces on a bridge, cluster DNS, a bootstrap, a
relay, N workers; containers of the built image when it is fresh, else processes), adds a load-generator host on
the same network (like a client pod labelled p2p-fast/api-client=true), and runs the command there with
``P2P_API_URLS`` set to the task APIs it should use: the bootstrap and relay Services' (``services``, the
default: what clients of a cluster reach) or every node's (``all``: workers dispatch too). Prints what each worker executed afterwards. Needs root.
Every process and namespace it makes is gone when it exits, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))
if str(REPO) not in sys.path:  # run as `python stress/bed.py`: testing/ is the checkout's, never installed
    sys.path.insert(0, str(REPO))

from podcluster import PodCluster, remove_containers  # noqa: E402

from testing.testbed import Testbed, cleanup_stale, unavailable_reason  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--runtime", choices=["auto", "process", "podman"], default="auto")
    p.add_argument("--targets", choices=["services", "all"], default="services")
    p.add_argument("--timeout", type=float, default=3600, help="upper bound for the command, seconds")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS... (run in the load-generator host)")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given (-- locust ...)")
    if not 1 <= args.workers <= 40:
        p.error("--workers must be within 1..40")
    reason = unavailable_reason()
    if reason:
        print(f"bed.py: cannot build the test bed: {reason}", file=sys.stderr)
        return 2
    for bed_id in cleanup_stale():
        remove_containers(bed_id)

    t0 = time.monotonic()
    with Testbed(label="stress-test") as bed, tempfile.TemporaryDirectory(prefix="p2pf-stress-") as tmp:
        cluster = PodCluster(bed, Path(tmp), runtime=args.runtime)
        try:
            print(f"== test-bed cluster: 1 bootstrap, 1 relay, {args.workers} workers "
                  f"(pods as {cluster.runtime}: {cluster.runtime_reason})", flush=True)
            cluster.deploy(workers=args.workers)
            ids = cluster.peer_ids(cluster.workers)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # every worker known as a compute worker at every entry point
                caps = cluster.bootstrap.get("/v1/capabilities")["network"].get("compute", [])
                if set(ids) <= set(caps):
                    break
                time.sleep(0.5)
            print(f"== cluster ready in {time.monotonic() - t0:.1f}s", flush=True)
            pods = cluster.live_pods() if args.targets == "all" else [cluster.bootstrap, cluster.relay]
            urls = ",".join(pod.url for pod in pods)
            loadgen = bed.add_host("loadgen")
            env = {**os.environ, "P2P_API_URLS": urls, "PYTHONUNBUFFERED": "1"}
            print(f"== running in the load generator ({loadgen.ip}): {' '.join(command)}\n"
                  f"   P2P_API_URLS={urls}", flush=True)
            proc = bed.processes.popen(loadgen.ns, command, env=env, start_new_session=False)
            try:
                rc = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"bed.py: the command ran over {args.timeout:.0f}s; stopping it", file=sys.stderr)
                proc.kill()
                rc = proc.wait(10)
            print("== tasks executed per worker:", flush=True)
            for pod in cluster.workers:
                try:
                    tasks = pod.status().get("tasks", {})
                    print(f"   {pod.name}: executed {tasks.get('worker_executed', '?')}", flush=True)
                except Exception as exc:  # a report line, not a reason to fail the run
                    print(f"   {pod.name}: status unavailable ({exc})", flush=True)
            return rc
        finally:
            cluster.close()


if __name__ == "__main__":
    sys.exit(main())
