"""What a running ``p2p-node`` has imported, read from the process itself (``PYTHONPROFILEIMPORTTIME`` makes the
interpreter log every import to stderr): a node serving probes and metrics never loads the packages it does not use
(issue 12, start-up CPU and memory per node), and each loads when a request needs it."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from harness import NodeProcess, node_config

IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", re.M)
# Never needed by a node that serves probes and scrapes: httpx (and its command line: rich, click, pygments) is the
# remote console's client; FastAPI and pydantic are the /v1 API's (p2p_fast.app.api.front).
NOT_AT_START = ("httpx", "rich", "click", "pygments", "fastapi", "pydantic", "starlette")


def _imported(node: NodeProcess) -> set[str]:
    """Every module the node's interpreter has imported so far (top-level packages included)."""
    names = set(IMPORT_LINE.findall(node.stderr_path.read_text(errors="replace")))
    return names | {n.split(".")[0] for n in names}


def test_a_node_serving_probes_imports_none_of_the_api_and_client_packages(cluster):
    boot = cluster.start("boot", node_config("bootstrap"), env={"PYTHONPROFILEIMPORTTIME": "1"})
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(boot.http + path, timeout=10).status_code == 200
    loaded = _imported(boot)
    assert "p2p_fast.app.node" in loaded and "libp2p" in loaded  # the log is read: the node's own imports are in it
    assert sorted(loaded & set(NOT_AT_START)) == []

    # The first API request loads FastAPI, and answers as before.
    status = httpx.get(boot.http + "/v1/status", timeout=30)
    assert status.status_code == 200 and status.json()["role"] == "bootstrap"
    assert {"fastapi", "pydantic"} <= _imported(boot)


def test_the_entry_point_gives_the_garbage_collector_back_when_it_returns():
    """``main`` pauses the collector for the start-up (``settle_gc`` resumes it once a node has started); a return
    before that (here ``--help``, in this process as a caller of ``main`` would) leaves it running as it found it."""
    code = ("import gc, json\nfrom p2p_fast.app import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(gc.isenabled()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "true"
