"""What a running ``p2p-node`` has imported, read from the process itself: a node serving probes and metrics never
loads the packages it does not use (issue 12, start-up CPU and memory per node), and each loads when a request needs
it. ``PYTHONPROFILEIMPORTTIME`` makes the interpreter log every ``import`` statement's module to stderr;
``importlib.import_module``, with which the stand-ins of ``lean_imports`` load the real modules, is not logged, so the
lists name modules that those import in turn."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import httpx

from harness import NodeProcess, node_config

IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", re.M)
# Never needed by a node that serves probes and scrapes: httpx (and its command line: rich, click, pygments) is the
# remote console's client; FastAPI and pydantic are the /v1 API's (p2p_fast.app.api.front).
NOT_AT_START = ("httpx", "rich", "click", "pygments", "fastapi", "pydantic", "starlette")
# Not until a client needs them (p2p_fast.app.api.lean_http): hypercorn's HTTP/2 and WebSocket protocols, FastAPI's
# OpenAPI models and security schemes.
NOT_FOR_HTTP_1 = ("h2.connection", "hpack", "wsproto", "wsproto.connection")
NOT_FOR_THE_API = ("fastapi.security.api_key", "fastapi.security.utils")


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
    assert sorted(loaded & {*NOT_AT_START, *NOT_FOR_HTTP_1}) == []

    # The node's JSON reads (api.lean_routes) load none of it either.
    status = httpx.get(boot.http + "/v1/status", timeout=30)
    assert status.status_code == 200 and status.json()["role"] == "bootstrap"
    assert sorted(_imported(boot) & {*NOT_AT_START, *NOT_FOR_HTTP_1}) == []

    # The first request those do not answer loads FastAPI; not the OpenAPI models, nor HTTP/2 or WebSocket.
    tasks = httpx.get(boot.http + "/v1/tasks", timeout=30)
    assert tasks.status_code == 200 and tasks.json()["tasks"] == []
    loaded = _imported(boot)
    assert {"fastapi", "pydantic"} <= loaded
    assert sorted(loaded & {*NOT_FOR_HTTP_1, *NOT_FOR_THE_API}) == []


def test_http2_a_websocket_upgrade_and_the_openapi_schema_load_what_they_need(cluster):
    boot = cluster.start("boot", node_config("bootstrap"), env={"PYTHONPROFILEIMPORTTIME": "1"})
    # HTTP/2 with prior knowledge (h2c): hypercorn's H2Protocol, behind the stand-in until now.
    with httpx.Client(http1=False, http2=True, timeout=30) as h2_client:
        r = h2_client.get(boot.http + "/healthz")
    assert (r.status_code, r.http_version, r.text) == (200, "HTTP/2", "ok\n")
    assert {"h2.connection", "wsproto.connection"} <= _imported(boot)  # the group, loaded for real
    # A WebSocket upgrade: the node has no WebSocket route, so the app refuses it and hypercorn answers 403.
    host, port = boot.http.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 403")
    # The OpenAPI schema: FastAPI's models, loaded for it, validate it as before.
    schema = httpx.get(boot.http + "/openapi.json", timeout=30)
    assert schema.status_code == 200 and "/v1/status" in schema.json()["paths"]
    assert {"fastapi.security.api_key", "fastapi.security.utils"} <= _imported(boot)


def test_the_entry_point_gives_the_garbage_collector_back_when_it_returns():
    """``main`` pauses the collector for the start-up (``settle_gc`` resumes it once a node has started); a return
    before that (here ``--help``, in this process as a caller of ``main`` would) leaves it running as it found it."""
    code = ("import gc, json\nfrom p2p_fast.app import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(gc.isenabled()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "true"


NOT_WITHOUT_V1_MODELS = ("pydantic.v1", "Cython", "cython")


def test_the_api_does_not_load_pydantic_v1_to_find_no_v1_models(cluster):
    """FastAPI 0.165 imports ``pydantic.v1`` (and, from its version module, Cython's shadow module) to ask whether each
    route parameter is a pydantic v1 model: 2.3 MiB for a node whose routes have none. A class can only be one if
    ``pydantic.v1`` was imported, so the node's check answers False without importing it, as stock would."""
    boot = cluster.start("boot", node_config("bootstrap"), env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert httpx.get(boot.http + "/v1/tasks", timeout=30).status_code == 200
    assert httpx.get(boot.http + "/v1/ledger", timeout=30).status_code == 200
    loaded = _imported(boot)
    assert "fastapi" in loaded and sorted(loaded & set(NOT_WITHOUT_V1_MODELS)) == []


def test_fastapis_v1_model_checks_answer_as_stock_with_and_without_pydantic_v1():
    code = """
import json, sys
from p2p_fast.app.api import lean_http
import pydantic
from fastapi._compat import shared
import fastapi.encoders
stock = (shared.is_pydantic_v1_model_class, fastapi.encoders.is_pydantic_v1_model_instance)
assert lean_http.check_v1_models_lazily()
out = {"v1_loaded_by_checks": None}
class V2(pydantic.BaseModel):
    x: int = 0
out["before"] = [shared.annotation_is_pydantic_v1(V2), shared.annotation_is_pydantic_v1(list[V2]),
                 fastapi.encoders.is_pydantic_v1_model_instance(V2())]
out["v1_loaded_by_checks"] = "pydantic.v1" in sys.modules
from pydantic import v1
class V1(v1.BaseModel):
    x: int = 0
out["after"] = [shared.annotation_is_pydantic_v1(V1), shared.annotation_is_pydantic_v1(V2),
                fastapi.encoders.is_pydantic_v1_model_instance(V1()), stock[0](V1), stock[1](V1())]
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert doc == {"before": [False, False, False], "v1_loaded_by_checks": False,
                   "after": [True, False, True, True, True]}
