"""The HTTP API fuzzed against its own OpenAPI schema (schemathesis): a real node process behind a bearer token,
every operation called with generated valid and invalid requests. No request may get a 5xx, and every error is
JSON with an ``error`` field. Bounded: ``EXAMPLES`` per operation; waits in requests are capped at 1 s so that a
generated ``wait=60`` cannot stall the run."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from harness import record  # noqa: E402
from harness import Cluster, NodeProcess, node_config  # noqa: E402

EXAMPLES = int(os.environ.get("P2P_FAST_API_FUZZ_EXAMPLES", "25"))
TOKEN = secrets.token_hex(20)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALLS: dict[str, int] = {}
# What the node answered, as observed: HTTP status -> responses, and error answers that were not JSON with "error".
STATUSES: Counter[int] = Counter()
BAD_ERRORS: list[str] = []
# A valid request here never ends (Server-Sent Events); its bad inputs are tested in tests/tasks/test_events.py.
ENDLESS = frozenset({"/v1/events"})


@pytest.fixture(scope="module")
def api_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    d = tmp_path_factory.mktemp("apifuzz")
    (d / "token").write_text(TOKEN)
    c = Cluster(d)
    try:
        # A worker on its own: tasks it accepts run locally and end within seconds (short timeouts, no retries).
        yield c.start("node", node_config("worker", http={"listen": "127.0.0.1:0", "token_file": str(d / "token")},
                                          tasks={"default_timeout": 2, "max_retries": 0, "assign_timeout": 2}))
    finally:
        c.close()


def _cap(doc: Any, names: tuple[str, ...], cap: float) -> None:
    if isinstance(doc, dict):
        for name in names:
            value = doc.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
                doc[name] = cap


MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


def _operations(node: NodeProcess) -> list[Any]:
    # schemathesis's pytest plugin (from_fixture) does not run under pytest 9, so the operations are driven here.
    loaded = schemathesis.openapi.from_url(node.http + "/openapi.json", headers=AUTH)
    return [result.ok() for result in loaded.get_all_operations()]


def _observe(key: str, response: Any) -> None:
    """Count the answer before it is judged, so that the summary reports what the node did."""
    STATUSES[response.status_code] += 1
    if response.status_code >= 400:
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not (isinstance(doc, dict) and doc.get("error")):
            BAD_ERRORS.append(f"{key}: {response.status_code} {response.text[:100]!r}")


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_no_request_gets_a_server_error_and_errors_are_json(api_node: NodeProcess, mode: Any) -> None:
    operations = _operations(api_node)
    assert len(operations) >= 10, [op.label for op in operations]
    for operation in operations:
        if operation.path in ENDLESS:
            CALLS.setdefault(f"{operation.label} (skipped: an endless stream)", 0)
            continue
        try:
            strategy = operation.as_strategy(generation_mode=mode)
        except Exception as exc:  # an operation with nothing to make invalid has no negative cases
            CALLS.setdefault(f"{operation.label} ({mode.value}: {type(exc).__name__})", 0)
            continue

        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def call(case: Any) -> None:
            _cap(case.query, ("wait",), 1)
            _cap(case.body, ("wait_s",), 1)
            _cap(case.body, ("timeout_s",), 2)
            response = case.call(base_url=api_node.http, headers=AUTH, timeout=30)
            key = f"{operation.label} ({mode.value})"
            CALLS[key] = CALLS.get(key, 0) + 1
            _observe(key, response)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                doc = response.json()
                assert isinstance(doc, dict) and doc.get("error"), (response.status_code, response.text[:300])

        try:
            call()
        except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
            CALLS.setdefault(f"{operation.label} ({mode.value}: no invalid form)", 0)
    assert api_node.proc is not None and api_node.proc.poll() is None


def test_numbers_beyond_64_bits_are_refused_not_server_errors(api_node: NodeProcess) -> None:
    """Found by this fuzzer: ``GET /v1/tasks?offset=18310386390278353190912`` reached SQLite and was a 500."""
    import httpx

    huge = str(2**70)
    with httpx.Client(base_url=api_node.http, headers=AUTH, timeout=10) as c:
        for method, path, kw in [("GET", "/v1/tasks", {"params": {"offset": huge}}),
                                 ("GET", "/v1/tasks", {"params": {"limit": huge}}),
                                 ("GET", "/v1/ledger", {"params": {"limit": huge}}),
                                 ("GET", "/v1/gossip", {"params": {"limit": huge}}),
                                 ("POST", "/v1/tasks", {"json": {"type": "echo", "reward": 2**70}}),
                                 ("POST", "/v1/tasks", {"json": {"type": "echo", "max_retries": 2**70}})]:
            r = c.request(method, path, **kw)
            CALLS["boundary"] = CALLS.get("boundary", 0) + 1
            _observe("boundary", r)
            assert 400 <= r.status_code < 500 and r.json()["error"], (method, path, r.status_code, r.text[:200])


def test_zz_figures(api_node: NodeProcess) -> None:
    """Runs last in this module: records the answers the node gave above (5xx counted, not assumed) and whether
    the node process was still running, then requires no 5xx, JSON errors only, and a live node."""
    if not STATUSES:
        pytest.skip("no request of this module ran in this session: nothing to summarise")
    assert api_node.proc is not None
    exit_code = api_node.proc.poll()
    server_errors = sum(n for status, n in STATUSES.items() if status >= 500)
    record("api_schema_fuzz", inputs=sum(STATUSES.values()), operations_and_modes=len(CALLS),
           server_errors=server_errors, errors_not_json=len(BAD_ERRORS), node_exited=exit_code is not None,
           statuses={str(k): v for k, v in sorted(STATUSES.items())})
    assert server_errors == 0, dict(STATUSES)
    assert not BAD_ERRORS, BAD_ERRORS[:5]
    assert exit_code is None, f"the node exited with {exit_code}"
