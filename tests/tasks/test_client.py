"""``p2p_fast.client`` against real node processes: 1 bootstrap (it cannot run tasks: everything crosses the network)
and 3 workers that accept functions, in a private network (PSK), the bootstrap's API behind a token.

The tests that take ``transport`` (directly or through ``client``) run twice: over the node's task lane (the
client's default) and over HTTP requests and the event stream (``lane=False``)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import trio

from harness import Cluster, NodeProcess, node_config, wait_until
from p2p_fast.client import AsyncClient, Client, NodeError, PayloadTooLarge, TaskFailed, as_completed, gather


TOKEN = "client-test-token-" + secrets.token_hex(8)
MAX_BODY = 64 * 1024


def square(x: int) -> int:
    return x * x


def boom(x: int) -> int:
    raise ValueError(f"bad input {x}")


def touch_then(path: str, value: int) -> int:
    Path(path).write_text("ran")
    return value


def slow_identity(x: int) -> int:
    import time

    time.sleep(0.3)
    return x


def pid_of(_: int) -> int:
    import os

    return os.getpid()


def wait_for_workers(node: NodeProcess, capability: str, n: int, timeout: float = 40) -> None:
    def enough() -> bool:
        doc = httpx.get(node.http + "/v1/capabilities", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
        return len(doc["network"].get(capability, [])) >= n

    wait_until(enough, timeout, f"{node.name} to see {n} live {capability} worker(s)")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("client")
    cluster = Cluster(tmp)
    env = {"P2P_PSK": secrets.token_hex(32)}
    try:
        boot = cluster.start("boot", node_config("bootstrap", http={"listen": "127.0.0.1:0",
                                                                     "max_body_bytes": MAX_BODY}),
                             env={**env, "P2P_API_TOKEN": TOKEN})
        workers = [cluster.start(f"w{i}", node_config(
            "worker", node={"capabilities": ["compute"]}, network={"bootstrap_peers": [boot.addr()]},
            tasks={"accept_functions": True, "slots": 2}), env=env) for i in range(3)]
        wait_for_workers(boot, "functions", 3)
        yield {"cluster": cluster, "boot": boot, "workers": workers, "tmp": tmp, "env": env}
    finally:
        cluster.close()


@pytest.fixture(params=["lane", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_client(api: str, transport: str, **kw: Any) -> Client:
    """A client on ``transport``, checked to be using it (the lane needs the node to offer it)."""
    c = Client(api, lane=transport == "lane", **kw)
    on_lane = c._engine.completion.lane_port is not None
    if on_lane != (transport == "lane"):
        c.close()
        raise AssertionError(f"the client is {'' if on_lane else 'not '}on the task lane, wanted {transport}")
    return c


@pytest.fixture()
def client(net: dict[str, Any], transport: str) -> Iterator[Client]:
    with open_client(net["boot"].http, transport, token=TOKEN) as c:
        yield c
    if transport == "lane":  # everything went on the lane (the poster falls back to HTTP only while it is down)
        assert c._engine.poster.on_lane == c._engine.batches  # type: ignore[attr-defined]


def test_registered_types_and_functions(client: Client) -> None:
    assert client.submit("echo", b"\x00\xffbinary").result(timeout=30) == b"\x00\xffbinary"
    assert client.submit("compute", "sha256 3 abc").result(timeout=30).startswith(b"sha256^3=")
    assert client.submit(square, 12).result(timeout=30) == 144
    assert client.submit(lambda a, b=1: {"sum": a + b}, 2, b=5).result(timeout=30) == {"sum": 7}
    with client.executor() as ex:
        assert list(ex.map(square, [1, 2, 3])) == [1, 4, 9]
        assert ex.submit(divmod, 17, 5).result(timeout=30) == (3, 2)


def test_map_2000_in_order_and_as_completed_once(client: Client) -> None:
    assert list(client.map(square, range(2000), batch_size=500, timeout=120)) == [i * i for i in range(2000)]
    futures = [client.submit(square, i) for i in range(300)]
    seen = [f.result() for f in as_completed(futures, timeout=120)]
    assert sorted(seen) == sorted(i * i for i in range(300)) and len(seen) == 300
    assert gather(futures) == [i * i for i in range(300)]


def test_lone_submissions_are_written_by_the_caller(client: Client) -> None:
    """One task at a time: each is written by the submitting thread (no wait for the sender thread to wake), its
    answer read by the sender (HTTP) or by the lane's reader (the sender is not woken at all); the futures resolve
    as always, and a burst after them still goes in batches."""
    engine = client._engine
    client.submit(square, 0).result(timeout=30)  # the sender's connection is open
    before = engine.direct
    for i in range(20):
        wait_until(lambda: engine.conn_owner == "idle", 10, "the sender to be idle")
        fut = client.submit(square, i)
        assert fut.result(timeout=30) == i * i and len(fut.task_id) == 32  # type: ignore[attr-defined]
    assert engine.direct - before == 20
    # A burst still goes through the queue, in batches.
    batches = engine.batches
    assert gather([client.submit(square, i) for i in range(300)], timeout=60) == [i * i for i in range(300)]
    assert engine.batches - batches < 300


def test_function_exception_comes_back_with_its_traceback(client: Client) -> None:
    fut = client.submit(boom, 3)
    with pytest.raises(TaskFailed) as info:
        fut.result(timeout=30)
    err = info.value.error
    assert "ValueError: bad input 3" in err and "Traceback (most recent call last)" in err and "in boom" in err
    assert len(info.value.attempts) == 1  # a function's own exception is the answer: not retried elsewhere


def test_limits_checked_before_sending_and_batches_split(net: dict[str, Any], client: Client) -> None:
    assert client.limits.max_body_bytes == MAX_BODY
    with pytest.raises(PayloadTooLarge, match="max_payload_bytes"):
        client.submit("echo", b"x" * (client.limits.max_payload_bytes + 1))
    with pytest.raises(PayloadTooLarge, match="max_body_bytes"):
        client.submit("echo", b"x" * (MAX_BODY - 100))
    before = client._engine.batches
    blob = secrets.token_bytes(20_000)  # 27 KB of base64: two fit in one 64 KiB body
    futures = [client.submit("echo", blob) for _ in range(40)]
    assert all(f.result(timeout=60) == blob for f in futures)
    assert client._engine.batches - before >= 20


def test_functions_fail_fast_where_no_worker_accepts_them(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        boot = cluster.start("boot", node_config("bootstrap"), env={"P2P_API_TOKEN": TOKEN})
        cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
        wait_for_workers(boot, "compute", 1)
        with Client(boot.http, token=TOKEN) as c:
            with pytest.raises(NodeError, match="no live worker runs Python functions") as info:
                c.submit(square, 1).result(timeout=30)
            assert info.value.status == 400
            assert c.submit("compute", "sha256 1 a").result(timeout=30).startswith(b"sha256^1=")
    finally:
        cluster.close()


def test_functions_need_the_api_token(net: dict[str, Any], transport: str) -> None:
    with open_client(net["workers"][0].http, transport) as tokenless:  # a worker's API has no token
        engine = tokenless._engine
        wait_until(lambda: engine.conn_owner == "idle", 10, "the sender to be idle")
        with pytest.raises(NodeError, match="API token") as info:
            tokenless.submit(square, 2).result(timeout=30)
        assert info.value.status == 403
        # Both written by this thread: the refusal (read by the lane's reader, or the sender over HTTP) failed the
        # future and gave the connection back.
        wait_until(lambda: engine.conn_owner == "idle", 10, "the connection to be given back")
        assert tokenless.submit("echo", "still fine").result(timeout=30) == b"still fine"
        assert engine.direct == 2


def _wheel(tmp: Path, module: str, body: str) -> Path:
    path = tmp / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{module}/__init__.py", body)
        zf.writestr(f"{module}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        zf.writestr(f"{module}-1.0.dist-info/RECORD", "")
    return path


def test_shipped_packages_are_used_by_workers_that_never_had_them(net: dict[str, Any], client: Client) -> None:
    mod = f"shipped_{secrets.token_hex(4)}"
    module_file = net["tmp"] / f"{mod}.py"
    # The same text in every run of this test (once per transport), under a new module name each time: a worker
    # that installed it under the first name must install it under the second as well.
    module_file.write_text("def triple(x):\n    return 3 * x\n")
    whl_mod = f"wheelpkg_{secrets.token_hex(4)}"
    wheel = _wheel(net["tmp"], whl_mod, "def greet(n):\n    return 'hello ' + n\n")

    def use(x: int) -> tuple[int, str]:
        import importlib

        return importlib.import_module(mod).triple(x), importlib.import_module(whl_mod).greet(str(x))

    futures = [client.submit(use, i, packages=[module_file, wheel]) for i in range(12)]
    assert gather(futures, timeout=60) == [(3 * i, f"hello {i}") for i in range(12)]
    installed = [w for w in net["workers"] if (w.data_dir / "packages").exists()
                 and any((w.data_dir / "packages").iterdir())]
    assert installed, "no worker installed the packages"
    fut = client.submit(use, 1)  # without the packages: the worker's import fails, named in the error
    with pytest.raises(TaskFailed, match="No module named"):
        fut.result(timeout=30)


def test_async_client_under_asyncio_and_trio(net: dict[str, Any], transport: str) -> None:
    api = net["boot"].http

    async def body() -> list[Any]:
        async with AsyncClient(api, token=TOKEN, lane=transport == "lane") as ac:
            assert (ac.client._engine.completion.lane_port is not None) == (transport == "lane")
            fut = await ac.submit(square, 9)
            one = await fut
            mapped = [x async for x in ac.map(square, range(50), batch_size=10)]
            futs = [await ac.submit(square, i) for i in range(20)]
            done = [await f async for f in ac.as_completed(futs)]
            gathered = await ac.gather(futs)
            bad = await ac.submit(boom, 1)
            try:
                await bad
                failed = ""
            except TaskFailed as exc:
                failed = exc.error
            return [one, mapped, sorted(done), gathered, failed]

    for result in (asyncio.run(body()), trio.run(body)):
        one, mapped, done, gathered, failed = result
        assert one == 81
        assert mapped == [i * i for i in range(50)]
        assert done == sorted(i * i for i in range(20)) and gathered == [i * i for i in range(20)]
        assert "ValueError: bad input 1" in failed


def test_cancel_stops_a_running_task(client: Client, net: dict[str, Any]) -> None:
    def nap(s: float) -> float:
        import time

        time.sleep(s)
        return s

    fut = client.submit(nap, 30.0)
    wait_until(lambda: getattr(fut, "task_id", None), 10, "the task to be submitted")
    assert client.cancel(fut) and fut.cancelled()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    doc = wait_until(lambda: (lambda d: d if d["state"] == "cancelled" else None)(
        httpx.get(f"{net['boot'].http}/v1/tasks/{fut.task_id}", headers=headers, timeout=5).json()), 20,
        "the node to cancel the task")
    assert doc["error"] == "cancelled by the user"
    assert client.submit(square, 3).result(timeout=30) == 9


def test_p2p_ctl_cancel_capabilities_gossip_and_binary_payloads(net: dict[str, Any]) -> None:
    boot = net["boot"]
    env = {**os.environ, "P2P_API_TOKEN": TOKEN}

    def ctl(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "p2p_fast.app.ctl", "--data-dir", str(boot.data_dir), *argv],
                              input=stdin, capture_output=True, timeout=60, env=env)

    blob = bytes(range(256)) * 3
    src = net["tmp"] / "payload.bin"
    src.write_bytes(blob)
    out = net["tmp"] / "result.bin"
    r = ctl("submit", "echo", f"@{src}", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == blob
    r = ctl("submit", "echo", "-", "-o", "-", stdin=blob)
    assert r.returncode == 0 and r.stdout == blob, r.stderr
    r = ctl("submit", "echo", "@@literal")
    assert r.returncode == 0 and b"completed" in r.stdout and b": @literal" in r.stdout, r.stdout
    r = ctl("submit", "echo", "@/no/such/file")
    assert r.returncode == 2 and b"cannot read the payload file" in r.stderr
    r = ctl("submit", "sleep", "30", "--no-wait")
    task_id = r.stdout.decode().strip()
    r = ctl("cancel", task_id, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["state"] == "cancelled"
    r = ctl("cancel", task_id)
    assert r.returncode == 1 and b"already cancelled" in r.stderr
    r = ctl("capabilities", "--json")
    assert len(json.loads(r.stdout)["network"]["functions"]) == 3
    assert b"functions: 3 live peer(s)" in ctl("capabilities").stdout
    note = f"hello {secrets.token_hex(4)}"
    assert ctl("gossip", "-", stdin=note.encode()).returncode == 0
    wait_until(lambda: note in ctl("gossip", "--json").stdout.decode(), 20, "the gossip to be logged")


def test_refusing_workers_run_nothing(tmp_path: Path) -> None:
    """Outside a PSK network: a worker that advertises functions but has accept_functions off, and one that accepts
    functions but not from this submitter. Both refuse before anything runs; the task fails naming both reasons."""
    cluster = Cluster(tmp_path)
    try:
        boot = cluster.start("boot", node_config("bootstrap"), env={"P2P_API_TOKEN": TOKEN})
        cluster.start("off", node_config("worker", node={"capabilities": ["compute", "functions"]},
                                         network={"bootstrap_peers": [boot.addr()]}))
        cluster.start("picky", node_config("worker", node={"capabilities": ["compute"]},
                                           network={"bootstrap_peers": [boot.addr()]},
                                           tasks={"accept_functions": True}))
        wait_for_workers(boot, "functions", 2)
        marker = tmp_path / "ran.txt"
        with Client(boot.http, token=TOKEN) as c:
            fut = c.submit(touch_then, str(marker), 1, options={"max_retries": 1})
            with pytest.raises(TaskFailed) as info:
                fut.result(timeout=60)
        err = str(info.value)
        assert "tasks.accept_functions is false" in err
        assert "runs Python functions only from tasks.allowed_submitters" in err
        assert not marker.exists()
    finally:
        cluster.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_event_stream_survives_a_node_restart(net: dict[str, Any], transport: str) -> None:
    """The client's node restarts mid-run (same data dir and API address): the client reconnects to the stream
    (or the lane, on the port the restarted node tells), resyncs, and every future resolves once with its result;
    the stream pushed (no long polls needed)."""
    port = _free_port()
    cfg = node_config("bootstrap", node={"capabilities": []}, http={"listen": f"127.0.0.1:{port}"},
                      network={"bootstrap_peers": [net["boot"].addr()]})
    sub = net["cluster"].start("sub", cfg, env={**net["env"], "P2P_API_TOKEN": TOKEN})
    wait_for_workers(sub, "functions", 3)
    resolved: dict[int, int] = {}
    lock = threading.Lock()
    with open_client(f"http://127.0.0.1:{port}", transport, token=TOKEN) as c:
        assert c.submit(square, 2).result(timeout=30) == 4
        comp = c._engine.completion
        assert comp.streaming and comp.polls == 0
        futures = []
        for i in range(30):
            f = c.submit(slow_identity, i, options={"max_retries": 5})
            f.add_done_callback(lambda _f, i=i: (lock.acquire(), resolved.__setitem__(i, resolved.get(i, 0) + 1),
                                                 lock.release()))
            futures.append(f)
        wait_until(lambda: sum(f.done() for f in futures) >= 3, 60, "a few tasks to finish")
        sub.stop()
        assert not all(f.done() for f in futures)
        sub.start().wait_started()
        assert gather(futures, timeout=120) == list(range(30))
        assert comp.reconnects >= 1 and comp.resyncs >= 2 and comp.streaming
        # Written by this thread on the sender's kept-alive connection, which the restart closed: sent again on a
        # fresh one by the sender, which reads the answer. On the lane: the new lane, on the node's new port.
        wait_until(lambda: c._engine.conn_owner == "idle", 10, "the sender to be idle")
        direct = c._engine.direct
        assert c.submit(square, 5).result(timeout=30) == 25
        assert c._engine.direct == direct + 1
        if transport == "lane":
            assert comp.lane is not None  # reconnected, to the port the restarted node told (a new one: port 0)
            on_lane = c._engine.poster.on_lane  # type: ignore[attr-defined]
            assert c.submit(square, 6).result(timeout=30) == 36
            assert c._engine.poster.on_lane == on_lane + 1  # type: ignore[attr-defined]
    wait_until(lambda: len(resolved) == 30, 10, "every done callback")
    assert set(resolved.values()) == {1}
    sub.stop()


def _pool_counters(workers: list[NodeProcess]) -> tuple[float, float]:
    """(batches, requests in them) the workers handed their pool children so far."""
    out = [0.0, 0.0]
    for w in workers:
        for line in httpx.get(w.http + "/metrics", timeout=10).text.splitlines():
            for i, name in enumerate(("p2p_tasks_pool_batches_total ", "p2p_tasks_pool_batched_total ")):
                if line.startswith(name):
                    out[i] += float(line.split()[-1])
    return out[0], out[1]


def test_a_slow_function_is_not_batched_like_a_fast_one(net: dict[str, Any], client: Client) -> None:
    """Workers batch short requests into one pool child by the run time they learned, per function (the client
    names each in the payload header): a slow function right after many fast ones runs one request per batch. (The
    choice itself, a budget of learned run times, is tested in test_batching_units.)"""
    assert gather([client.submit(square, i) for i in range(300)], timeout=120) == [i * i for i in range(300)]
    batches, batched = _pool_counters(net["workers"])
    assert gather([client.submit(slow_identity, i) for i in range(12)], timeout=120) == list(range(12))
    batches2, batched2 = _pool_counters(net["workers"])
    assert (batches2 - batches, batched2 - batched) == (12, 12)


def test_killed_worker_tasks_finish_elsewhere_each_future_once(net: dict[str, Any], client: Client,
                                                               transport: str) -> None:
    """Last in this module: it kills a worker of the shared network (another one for each transport)."""
    resolved: dict[int, int] = {}
    lock = threading.Lock()

    def count(i: int) -> Any:
        def cb(_f: Any) -> None:
            with lock:
                resolved[i] = resolved.get(i, 0) + 1
        return cb

    futures = []
    for i in range(40):
        f = client.submit(slow_identity, i, options={"max_retries": 5})
        f.add_done_callback(count(i))
        futures.append(f)
    victim = net["workers"][["lane", "http"].index(transport)]
    wait_until(lambda: victim.status()["tasks"]["worker_running"] > 0, 30, "the victim to run a task")
    victim.kill9()
    assert gather(futures, timeout=120) == list(range(40))
    wait_until(lambda: len(resolved) == 40, 10, "every done callback")
    assert set(resolved.values()) == {1}
