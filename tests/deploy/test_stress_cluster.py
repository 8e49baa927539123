"""``./stress-test.sh --cluster``: locust against the deployed cluster of kubectl's current context, through a
port-forward the script starts and stops. No cluster runs here, so a stand-in kubectl answers the Service lookup and
serves ``port-forward`` by forwarding the local port to a real bootstrap's API (a bootstrap and a worker run as
processes); the load, the tasks and the report are real."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from k8s_render import REPO

from harness import Cluster, node_config, wait_until

FAKE_KUBECTL = r'''#!/usr/bin/env python3
import json, os, socket, sys, threading
args = sys.argv[1:]
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as fh:
    fh.write(json.dumps({"args": args, "pid": os.getpid()}) + "\n")
if args[:2] == ["config", "current-context"]:
    print("kind-test")
elif "get" in args and "service" in args:
    sys.exit(0 if args[-1] == "p2p-bootstrap" else 1)
elif "port-forward" in args:
    local = int(args[-1].split(":")[0])
    target = ("127.0.0.1", int(os.environ["FAKE_FORWARD_TO"]))
    srv = socket.create_server(("127.0.0.1", local))
    print(f"Forwarding from 127.0.0.1:{local} -> 8080", flush=True)

    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:
        conn, _ = srv.accept()
        up = socket.create_connection(target)
        threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()
else:
    sys.exit(1)
'''


def test_stress_cluster_port_forwards_runs_locust_and_stops_the_forward(tmp_path: Path) -> None:
    if importlib.util.find_spec("locust") is None:  # not imported here: locust monkey-patches the process (gevent)
        pytest.skip("locust is not installed: pip install -e '.[stress]' (./stress-test.sh installs it itself)")
    cluster = Cluster(tmp_path)
    try:
        boot = cluster.start("boot", node_config("bootstrap"))
        cluster.start("w1", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
        wait_until(lambda: any("compute" in p["capabilities"] for p in boot.peers()), 30, "a compute worker known")
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "kubectl").write_text(FAKE_KUBECTL)
        (bindir / "kubectl").chmod(0o755)
        log = tmp_path / "kubectl.jsonl"
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_KUBECTL_LOG": str(log),
               "FAKE_FORWARD_TO": boot.http.rsplit(":", 1)[1]}
        proc = subprocess.run([str(REPO / "stress-test.sh"), "--cluster", "--users", "2", "--spawn-rate", "2",
                               "--run-time", "5s", "--reports", str(tmp_path / "reports")],
                              capture_output=True, text=True, env=env, timeout=240, cwd=str(REPO))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        calls = [json.loads(ln) for ln in log.read_text().splitlines()]
        (forward,) = [c for c in calls if "port-forward" in c["args"]]
        assert forward["args"][:2] == ["-n", "net-test"] and "svc/p2p-bootstrap" in forward["args"]
        port = forward["args"][-1].split(":")[0]
        assert f"locust against http://127.0.0.1:{port}" in out
        assert "port-forward stopped" in out
        with pytest.raises(ProcessLookupError):  # the script stopped it
            os.kill(forward["pid"], 0)
        m = re.search(r"== task compute: (\d+) tasks in \d+s, (\d+) failed", out)
        assert m and int(m.group(1)) > 0 and int(m.group(2)) == 0, out[-3000:]  # real tasks, run by the worker
    finally:
        cluster.close()
