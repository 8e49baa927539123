"""What the task benchmarks (``bench_tasks.py``, ``bench_fair.py``) share: node configs and node processes, a network
of 1 bootstrap + 3 workers, a capability-less node run in this process, the "median (min-max, runs)" format and
the writing of a section of bench/RESULTS.md. One place, so that both benchmarks build the same network the same
way and a fix to it reaches both."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

RESULTS = REPO / "bench" / "RESULTS.md"
WORKERS = 3


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summary(values: list[float], digits: int = 0) -> str:
    """One run: the value and "1 run"; several: median (min-max, runs). Never the best alone."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f} (1 run)"
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f}, {len(values)})"


def node_cfg(role: str, caps: list[str], boot: str | None, slots: int = 2) -> dict[str, Any]:
    return {
        "node": {"role": role, "listen_port": 0, "listen_host": "127.0.0.1", "heartbeat_interval": 1,
                 "capabilities": caps, "max_connections": 100},
        "network": {"enable_mdns": False, "enable_relay": False, "connection_timeout": 10,
                    "rebootstrap_interval": 1, "bootstrap_peers": [boot] if boot else []},
        "gossip": {"heartbeat_interval": 0.5},
        "http": {"listen": "127.0.0.1:0"},
        "logging": {"level": "warning"},
        "tasks": {"slots": slots},
    }


class Proc:
    """A ``p2p-node`` process in ``root/name``, started from ``cfg`` (``env`` added to this process's)."""

    def __init__(self, name: str, root: Path, cfg: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True)
        (self.dir / "config.yaml").write_text(yaml.safe_dump(cfg))
        self.stderr = open(self.dir / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2p_fast", "--config", str(self.dir / "config.yaml"), "--data-dir",
             str(self.dir / "data"), "--console", "off"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.stderr, cwd=str(REPO), env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.runtime = json.loads((self.dir / "data" / "node.json").read_text())
                break
            except (OSError, ValueError):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(self.dir / 'stderr.log').read_text()[-2000:]}")
                time.sleep(0.1)
        else:
            raise TimeoutError(f"{name} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.close()


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


class Network:
    """1 bootstrap + 3 ``compute`` workers as processes, ready once the bootstrap's API lists every worker under
    ``listed`` (``compute``; ``functions`` for workers that accept functions)."""

    def __init__(self, root: Path, listed: str = "compute", slots: int = 2, worker_tasks: dict[str, Any] | None = None,
                 boot_env: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> None:
        import httpx

        self.boot = Proc("boot", root, node_cfg("bootstrap", ["bootstrap", "discovery"], None), env=boot_env)
        self.addr = self.boot.runtime["listen_addrs"][0]
        self.workers = []
        for i in range(WORKERS):
            cfg = node_cfg("worker", ["compute"], self.addr, slots=slots)
            cfg["tasks"].update(worker_tasks or {})
            self.workers.append(Proc(f"w{i}", root, cfg))
        self.http = self.boot.runtime["http"]
        wait_until(lambda: len(httpx.get(self.http + "/v1/capabilities", headers=headers).json()["network"]
                               .get(listed, [])) == WORKERS, 60, f"bootstrap to see {WORKERS} {listed} workers")

    def close(self) -> None:
        for p in [*self.workers, self.boot]:
            p.stop()


def run_embedded(boot_addr: str, data_dir: str, listed: str, body: Callable[[Any], Awaitable[dict[str, Any]]]) -> None:
    """A capability-less node in this process, joined to ``boot_addr``; once it sees the 3 workers (listed under
    ``listed``) ``body(node)`` runs, and its figures are printed as one JSON line for the parent benchmark."""
    import trio

    from p2p_fast.app.node import Node
    from p2p_fast.core.config import load_config_text

    cfg = load_config_text(yaml.safe_dump(node_cfg("worker", [], boot_addr)), "bench")
    cfg.node.data_dir = data_dir
    out: dict[str, Any] = {}

    async def main() -> None:
        node = Node(cfg)
        async with node.running():
            with trio.fail_after(60):
                while len(node.book.with_capability(listed)) < WORKERS:
                    await trio.sleep(0.1)
            out.update(await body(node))

    trio.run(main)
    print(json.dumps(out))


def run_child(argv: list[str], timeout: float, what: str) -> dict[str, Any]:
    """Run a benchmark's own child mode (``argv``) and return the JSON it printed last."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, timeout=timeout, cwd=str(REPO),
                         env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed: {out.stderr.decode()[-3000:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def write_section(title: str, body: str) -> None:
    """Replace (or append) the ``## <title>`` section of bench/RESULTS.md."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = old.splitlines()
    head = f"## {title}"
    start = next((i for i, line in enumerate(lines) if line.strip() == head), None)
    if start is None:
        new = old.rstrip("\n") + f"\n\n{head}\n\n{body}\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + [head, "", body, ""] + lines[end:]) + "\n"
    RESULTS.write_text(new)
