"""Run real ``p2p-node`` processes for tests: configs, start/stop, console I/O, HTTP, bounded waits.

Every process started here is killed when its :class:`Cluster` closes (also when a test fails), every wait has a
deadline and names what it waited for, and every port is on 127.0.0.1 (or inside a namespace the test built).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may not be checkable yet (process starting)
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}"
                       + (f" (last error: {last_exc})" if last_exc else ""))


def mapped(pid: int, needle: str) -> bool:
    """Whether the process has a file whose path contains ``needle`` mapped (an imported extension module: what
    a node has loaded, read from outside it)."""
    return needle in Path(f"/proc/{pid}/maps").read_text()


def node_config(role: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A test config: loopback, fast heartbeats; ``sections`` deep-merge over it."""
    base: dict[str, Any] = {
        "node": {"role": role, "listen_port": 0, "listen_host": "127.0.0.1", "heartbeat_interval": 1,
                 "capabilities": {"bootstrap": ["bootstrap", "discovery"], "relay": ["relay"],
                                  "worker": ["compute", "storage"]}[role],
                 "max_connections": 100},
        "network": {"enable_mdns": False, "enable_relay": role == "relay", "connection_timeout": 10,
                    "rebootstrap_interval": 1, "bootstrap_peers": []},
        "gossip": {"heartbeat_interval": 0.5},
        "http": {"listen": "127.0.0.1:0"},
        "logging": {"level": "info"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


class NodeProcess:
    def __init__(self, name: str, workdir: Path, config: dict[str, Any], extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None, prefix: Sequence[str] = (),
                 via: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.config = config
        self.config_path = self.dir / "config.yaml"
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.prefix = list(prefix)
        # How to reach the node's HTTP listener: directly, or e.g. ``testbed_host.call`` for a node in a namespace.
        self.via = via or (lambda fn: fn())
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None
        self.stderr_path = self.dir / "stderr.log"

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> "NodeProcess":
        self.config_path.write_text(yaml.safe_dump(self.config))
        runtime = self.data_dir / "node.json"
        if runtime.exists():
            runtime.unlink()
        argv = [*self.prefix, sys.executable, "-m", "p2p_fast", "--config", str(self.config_path),
                "--data-dir", str(self.data_dir), "--console", "on", *self.extra_args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env, cwd=str(REPO))
        self.lines = []
        self._reader = threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def wait_started(self, timeout: float = 30) -> "NodeProcess":
        wait_until(lambda: self.runtime() is not None or self._died(), timeout, f"{self.name} to start")
        if self._died():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.stderr()}")  # type: ignore
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def runtime(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.data_dir / "node.json").read_text())
        except (OSError, ValueError):
            return None
        if self.proc is None or doc.get("pid") != self.proc.pid:
            return None
        return doc

    @property
    def peer_id(self) -> str:
        rt = self.runtime()
        assert rt is not None, f"{self.name} is not running"
        return rt["peer_id"]

    @property
    def http(self) -> str:
        rt = self.runtime()
        assert rt is not None, f"{self.name} is not running"
        return rt["http"]

    def addr(self, with_id: bool = True) -> str:
        rt = self.runtime()
        assert rt is not None
        full = rt["listen_addrs"][0]
        return full if with_id else full.split("/p2p/")[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise
        finally:
            self._close_pipes()

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.proc is None:
            return
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=5)
        try:
            self._stderr.close()
        except Exception:
            pass

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    # -- interaction ------------------------------------------------------------------------------------------------
    def command(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def wait_output(self, pattern: str, timeout: float = 20, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in self.lines[start:]:
                m = rx.search(line)
                if m:
                    return m
            return None

        return wait_until(find, timeout, f"{self.name} to print /{pattern}/")

    def get(self, path: str, timeout: float = 5) -> Any:
        url = self.http + path
        r = self.via(lambda: httpx.get(url, timeout=timeout))
        r.raise_for_status()
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text

    def status(self) -> dict[str, Any]:
        return self.get("/v1/status")

    def peers(self) -> list[dict[str, Any]]:
        return self.get("/v1/peers")


class Cluster:
    """Owns node processes of one test; closes them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: list[NodeProcess] = []

    def add(self, name: str, config: dict[str, Any], **kw: Any) -> NodeProcess:
        node = NodeProcess(name, self.workdir, config, **kw)
        self.nodes.append(node)
        return node

    def start(self, name: str, config: dict[str, Any], **kw: Any) -> NodeProcess:
        return self.add(name, config, **kw).start().wait_started()

    def start_in(self, host: Any, name: str, config: dict[str, Any], **kw: Any) -> NodeProcess:
        """Start a node inside a test-bed host's network namespace (HTTP reached through ``host.call``)."""
        return self.start(name, config, prefix=["ip", "netns", "exec", host.ns], via=host.call, **kw)

    def close(self, grace: float = 8.0) -> None:
        """Stop every node at once: SIGTERM to all, one shared grace period, SIGKILL for the rest (stopping them
        one after the other cost seconds per test). Every node's pipes and log are closed either way."""
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                try:
                    n.proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                try:
                    n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            n.kill9()


FIGURES_DIR = REPO / ".cache" / "figures"


def record(test: str, **figures: Any) -> None:
    """Print a test's measured figures as one ``FIGURES {json}`` line, write them to
    ``.cache/figures/<test>.json`` (the last observation of each test, with the time), and append the line to the
    file named by ``P2P_FAST_FIGURES`` when it is set (RELIABILITY.md's tables are built from these). Figures are
    what the test observed: counts it took, never constants standing for what it asserts."""
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print("FIGURES", line)
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test).strip("_")
    stamped = {"recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "test": test, **figures}
    (FIGURES_DIR / f"{name}.json").write_text(json.dumps(stamped, sort_keys=True, indent=1) + "\n")
    path = os.environ.get("P2P_FAST_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
