"""The node's task lane (``p2p_fast/app/api/lane.py``) spoken directly, over real sockets to real node processes:
the token, bad frames (a clear error, only that lane closed), submissions with the HTTP route's checks and answers,
completions with their results, resuming after ``since``, and the config that turns it off. The client over the
lane (futures, restart, AsyncClient) is ``test_client.py``, whose tests run over the lane and over HTTP."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import struct
from typing import Any, Iterator

import httpx
import pytest

from harness import Cluster, NodeProcess, node_config, wait_until
from p2p_fast.client import Client
from p2p_fast.core.config import ConfigError, load_config_text

TOKEN = "lane-test-token-" + secrets.token_hex(8)
MAX_BODY = 64 * 1024
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cluster = Cluster(tmp_path_factory.mktemp("lane"))
    try:
        boot = cluster.start("boot", node_config("bootstrap", http={"listen": "127.0.0.1:0",
                                                                     "max_body_bytes": MAX_BODY}),
                             env={"P2P_API_TOKEN": TOKEN})
        worker = cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))

        def sees_worker() -> bool:
            doc = httpx.get(boot.http + "/v1/capabilities", headers=HEADERS, timeout=5).json()
            return len(doc["network"].get("compute", [])) >= 1

        wait_until(sees_worker, 40, "the bootstrap to see the worker")
        yield {"cluster": cluster, "boot": boot, "worker": worker}
    finally:
        cluster.close()


def lane_port(node: NodeProcess, headers: dict[str, str] | None = None) -> int | None:
    doc = httpx.get(node.http + "/v1/tasks/limits", headers=headers or HEADERS, timeout=10).json()
    return doc["task_lane_port"]  # type: ignore[no-any-return]


def _task_counts(node: NodeProcess) -> dict[str, int]:
    return httpx.get(node.http + "/v1/status", headers=HEADERS, timeout=10).json()["tasks"]  # type: ignore[no-any-return]


def finished_tasks(node: NodeProcess) -> int:
    c = _task_counts(node)
    return c["completed"] + c["failed"] + c["cancelled"]


def boot_idle(node: NodeProcess) -> bool:
    c = _task_counts(node)
    return c["pending"] == 0 and c["running"] == 0


class RawLane:
    """The lane's frames by hand: a length, then JSON (or whatever bytes a test wants to send)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send(self, doc: Any) -> None:
        self.send_raw(json.dumps(doc).encode())

    def send_raw(self, body: bytes, length: int | None = None) -> None:
        self.sock.sendall(struct.pack(">I", len(body) if length is None else length) + body)

    def read(self) -> dict[str, Any]:
        """The next frame (a read timeout of 20 s bounds it)."""
        while len(self.buf) < 4 or len(self.buf) < 4 + struct.unpack(">I", self.buf[:4])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the lane closed")
            self.buf += chunk
        n = struct.unpack(">I", self.buf[:4])[0]
        doc, self.buf = json.loads(self.buf[4:4 + n]), self.buf[4 + n:]
        return doc  # type: ignore[no-any-return]

    def read_op(self, *ops: str) -> dict[str, Any]:
        """The next frame whose op is one of ``ops`` (pings skipped; anything else fails the test)."""
        while True:
            doc = self.read()
            if doc["op"] in ops:
                return doc
            assert doc["op"] == "ping", doc

    def closed(self) -> bool:
        """The node closed the lane (EOF after whatever it still had to say)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except OSError:
            return True

    def hello(self, token: str | None = TOKEN, since: int | None = None) -> dict[str, Any]:
        self.send({"op": "hello", "token": token, "since": since})
        return self.read()

    def close(self) -> None:
        self.sock.close()


def test_the_lane_is_advertised_and_needs_the_token(net: dict[str, Any]) -> None:
    boot = net["boot"]
    port = lane_port(boot)
    assert port and json.loads((boot.data_dir / "node.json").read_text())["task_lane_port"] == port
    before = _unauthorized(boot)
    for token, detail in (("x" * len(TOKEN), "wrong token"), (None, "the API token in the hello's token"),
                          (TOKEN[:-1], "wrong token")):
        lane = RawLane(port)
        answer = lane.hello(token)
        assert answer["op"] == "error" and answer["error"] == "unauthorized", answer
        assert detail in answer["detail"] and TOKEN not in json.dumps(answer)
        assert lane.closed()
        lane.close()
    assert _unauthorized(boot) - before == 3
    lane = RawLane(port)
    hello = lane.hello()
    assert hello["op"] == "hello" and hello["gap"] is False and len(hello["stream"]) == 16
    assert hello["max_frame"] > MAX_BODY and hello["peer_id"] == boot.peer_id
    lane.close()


def _unauthorized(node: NodeProcess) -> float:
    text = httpx.get(node.http + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("p2p_api_unauthorized_total{"))


@pytest.mark.parametrize("bad, words", [
    (("raw", b"{not json"), "a frame is not JSON"),
    (("raw", b"[1, 2]"), "got list"),
    (("doc", {"op": "lookup", "ids": []}), "got op 'lookup'"),
    (("doc", {"op": "hello", "token": TOKEN, "since": None}), "only submit frames may follow it"),
    (("len", MAX_BODY + 10_000), "over this lane's limit"),
])
def test_a_bad_frame_gets_a_clear_error_and_closes_only_its_lane(net: dict[str, Any], bad: tuple[str, Any],
                                                                 words: str) -> None:
    port = lane_port(net["boot"])
    assert port
    good = RawLane(port)
    assert good.hello()["op"] == "hello"
    lane = RawLane(port)
    assert lane.hello()["op"] == "hello"
    kind, what = bad
    if kind == "raw":
        lane.send_raw(what)
    elif kind == "doc":
        lane.send(what)
    else:
        lane.send_raw(b"", length=what)
    answer = lane.read_op("error")
    assert answer["error"] == "bad frame" and words in answer["detail"], answer
    assert lane.closed()
    lane.close()
    # The node and its other lanes go on.
    good.send({"op": "submit", "tasks": [{"type": "echo", "payload": "still here"}]})
    (task_id,) = good.read_op("submitted")["ids"]
    ev = good.read_op("event")
    assert ev["data"]["id"] == task_id and base64.b64decode(ev["data"]["result"]) == b"still here"
    good.close()


def test_frames_before_the_hello_are_refused(net: dict[str, Any]) -> None:
    port = lane_port(net["boot"])
    assert port
    lane = RawLane(port)
    lane.send({"op": "submit", "tasks": [{"type": "echo"}]})
    answer = lane.read()
    assert answer["error"] == "bad frame" and "the first frame must be the hello" in answer["detail"]
    assert lane.closed()
    lane.close()
    lane = RawLane(port)
    lane.send_raw(b"", length=1_000_000)  # a large frame from somebody who has not said who they are
    answer = lane.read()
    assert "before the hello" in answer["detail"] and lane.closed()
    lane.close()


def test_submissions_get_the_http_routes_checks_and_answers(net: dict[str, Any]) -> None:
    boot = net["boot"]
    port = lane_port(boot)
    assert port
    lane = RawLane(port)
    assert lane.hello()["op"] == "hello"
    # What the HTTP route refuses, the lane refuses with the same status and error; the lane stays open.
    cases = [
        ({"op": "submit", "tasks": [{"type": "echo", "payload": "x", "colour": "red"}]}, 422, "tasks.0.colour"),
        ({"op": "submit", "tasks": []}, 422, "tasks"),
        ({"op": "submit", "tasks": [{"type": "echo", "max_retries": 1000}]}, 422, "tasks.0.max_retries"),
        ({"op": "submit", "tasks": [{"type": "no-such-type"}]}, 400, None),
        ({"op": "submit", "tasks": [{"type": "echo", "payload": "!!", "payload_encoding": "base64"}]}, 422, None),
    ]
    for doc, status, field in cases:
        lane.send(doc)
        answer = lane.read_op("refused")
        http = httpx.post(boot.http + "/v1/tasks/batch", json={"tasks": doc["tasks"]}, headers=HEADERS, timeout=10)
        assert answer["status"] == status == http.status_code, (doc, answer, http.text)
        assert answer["error"] == http.json()["error"]
        if field is not None:
            assert field in {p["field"] for p in answer["detail"]}, answer
    # Accepted: ids in order, then each task's final event with its result (base64), in the event stream's format.
    payloads = [f"lane {i}" for i in range(20)]
    lane.send({"op": "submit", "tasks": [{"type": "echo", "payload": p} for p in payloads]})
    ids = lane.read_op("submitted")["ids"]
    assert len(ids) == 20
    got: dict[str, bytes] = {}
    seqs = []
    while len(got) < 20:
        ev = lane.read_op("event")
        assert ev["type"] == "task" and ev["data"]["event"] == "completed"
        got[ev["data"]["id"]] = base64.b64decode(ev["data"]["result"])
        seqs.append(ev["seq"])
    assert [got[i] for i in ids] == [p.encode() for p in payloads] and seqs == sorted(seqs)
    lane.close()
    # A lane that says the last seq it saw gets what came after it (what a client reconnecting needs).
    again = RawLane(port)
    hello = again.hello(since=seqs[9])
    assert hello["gap"] is False
    replayed = [again.read_op("event") for _ in range(10)]
    assert [e["seq"] for e in replayed] == seqs[10:]
    again.close()


def test_functions_on_a_lane_without_a_token_are_refused(net: dict[str, Any]) -> None:
    worker = net["worker"]  # no API token: a lane to it is open to anyone, as its HTTP API is, but takes no code
    port = lane_port(worker, headers={})
    assert port
    lane = RawLane(port)
    assert lane.hello(token=None)["op"] == "hello"
    lane.send({"op": "submit", "tasks": [{"type": "function", "payload": "", "payload_encoding": "base64"}]})
    answer = lane.read_op("refused")
    assert answer["status"] == 403 and "API token" in answer["error"]
    lane.close()


def test_a_node_with_the_lane_off_serves_the_client_over_http(tmp_path: Any) -> None:
    cluster = Cluster(tmp_path)
    try:
        boot = cluster.start("boot", node_config("bootstrap", http={"listen": "127.0.0.1:0", "task_lane": False}),
                             env={"P2P_API_TOKEN": TOKEN})
        worker = cluster.start("w", node_config("worker", network={"bootstrap_peers": [boot.addr()]}))
        assert lane_port(boot) is None and json.loads((boot.data_dir / "node.json").read_text())["task_lane_port"] \
            is None
        wait_until(lambda: len(httpx.get(boot.http + "/v1/capabilities", headers=HEADERS, timeout=5)
                               .json()["network"].get("compute", [])) >= 1, 40, "the bootstrap to see the worker")
        with Client(boot.http, token=TOKEN) as c:
            assert c._engine.completion.lane_port is None and c._engine.completion.streaming
            assert c.submit("echo", b"over http").result(timeout=30) == b"over http"
        assert worker.status()
    finally:
        cluster.close()


def test_a_lane_port_in_use_is_a_clear_error(tmp_path: Any) -> None:
    import subprocess
    import sys

    import yaml

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = tmp_path / "boot.yaml"
        cfg.write_text(yaml.safe_dump(node_config("bootstrap", http={"listen": "127.0.0.1:0",
                                                                      "task_lane_port": port})))
        res = subprocess.run([sys.executable, "-m", "p2p_fast", "--config", str(cfg), "--data-dir",
                              str(tmp_path / "d"), "--console", "off"], capture_output=True, timeout=60)
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert f"task lane 127.0.0.1:{port}" in err and "http.task_lane_port" in err and "Traceback" not in err


def test_task_lane_config_is_strict() -> None:
    cfg = load_config_text("http: {task_lane: false, task_lane_port: 9100}", "t.yaml")
    assert cfg.http.task_lane is False and cfg.http.task_lane_port == 9100
    for bad, words in (("task_lane_port: 70000", "task_lane_port"), ("task_lane_port: -1", "task_lane_port"),
                       ("task_lane: 'yes'", "task_lane"), ("task_lane_port: 1.5", "task_lane_port")):
        with pytest.raises(ConfigError, match=words):
            load_config_text(f"http: {{{bad}}}", "t.yaml")


def test_a_client_that_stops_reading_loses_its_lane_and_resumes_with_since(net: dict[str, Any]) -> None:
    """The node writes a lane's events from inside its event bus and keeps what the socket does not take; a client
    that stops reading would make that grow without end, so past the lane's limit (8 MiB) the lane ends. The
    client, reconnecting with the last event it read, gets the rest from the bus's history: nothing is lost."""
    boot = net["boot"]
    port = lane_port(boot)
    assert port
    before = finished_tasks(boot)
    lane = RawLane(port)
    lane.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    assert lane.hello()["op"] == "hello"
    payload = secrets.token_hex(20_000)  # 40 kB: each completion event ~54 kB, 400 of them ~21 MB unread
    for _ in range(400):
        try:
            lane.send({"op": "submit", "tasks": [{"type": "echo", "payload": payload}]})
        except (ConnectionResetError, BrokenPipeError):
            break  # tasks finish fast enough to fill the 8 MiB before the last submissions: the lane ended first
    wait_until(lambda: "bytes unread" in boot.stderr(), 60, "the node to end the lane that is not read")
    # What the node accepted (the submissions it read before it gave up) all finish; each has its event.
    wait_until(lambda: boot_idle(boot), 60, "the accepted tasks to finish")
    n = finished_tasks(boot) - before
    assert n > 150  # more than the 8 MiB of events the lane may hold
    seen: dict[str, int] = {}
    last = None
    try:
        while True:
            doc = lane.read()
            if doc["op"] == "event" and base64.b64decode(doc["data"]["result"]) == payload.encode():
                seen[doc["data"]["id"]] = doc["seq"]
                last = doc["seq"]
    except (ConnectionError, OSError):
        pass  # the end of what the node had written before it gave up
    lane.close()
    assert len(seen) < n and last is not None
    again = RawLane(port)
    hello = again.hello(since=last)
    assert hello["gap"] is False
    while len(seen) < n:
        doc = again.read_op("event")
        assert base64.b64decode(doc["data"]["result"]) == payload.encode()
        seen[doc["data"]["id"]] = doc["seq"]
    assert len(seen) == n
    again.close()


class PortForward:
    """Forwards 127.0.0.2:<port> to one port of 127.0.0.1, as a Kubernetes Service or a proxy forwards a node's
    API port and nothing else (threads, real sockets)."""

    def __init__(self, target: int) -> None:
        import threading

        self.target = target
        self.listener = socket.create_server(("127.0.0.2", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.threads: list[Any] = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [a, b]
            for src, dst in ((a, b), (b, a)):
                t = threading.Thread(target=self._pipe, args=(src, dst), daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for t in self.threads[1:]:
            t.join(timeout=10)  # each ends when its side hung up (the client closed)
        for s in self.socks:
            s.close()


def test_a_client_that_cannot_reach_the_lane_uses_http_and_the_event_stream(net: dict[str, Any]) -> None:
    """The API is reached through a forward of its port only: the lane the node advertises (same host as the API,
    another port) is not reachable there. The client says so once and uses HTTP and the event stream."""
    boot = net["boot"]
    forward = PortForward(int(boot.http.rsplit(":", 1)[1]))
    try:
        with Client(f"http://127.0.0.2:{forward.port}", token=TOKEN) as c:
            comp = c._engine.completion
            wait_until(lambda: comp.streaming, 20, "the client's event stream")
            assert comp.lane_port is None and comp.lane is None
            assert [c.submit("echo", f"via http {i}").result(timeout=30) for i in range(5)] == \
                [f"via http {i}".encode() for i in range(5)]
            assert comp.polls == 0  # pushed by the event stream, not long-polled
    finally:
        forward.close()
