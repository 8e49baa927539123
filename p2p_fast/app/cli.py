"""``p2p-node --config FILE``: run a node as bootstrap, relay or worker. ``p2p-node doctor --config FILE`` checks
one instead (``p2p_fast.app.doctor``).

Exit codes: 0 clean stop (signal, ``quit``, end of piped input with every task done); 1 a runtime failure (port in
use, data dir locked) or, for piped input, a failed command or task; 2 a bad config or flag.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import stat
import sys
from typing import TYPE_CHECKING, Any, Sequence

import trio

from p2p_fast.core.config import ConfigError, apply_overrides, load_config

if TYPE_CHECKING:
    from p2p_fast.app.node import Node

log = logging.getLogger("p2p_fast.app.cli")
STOP_GRACE_S = 4.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="p2p-node", description="Run a p2p-fast node (bootstrap, relay or worker).",
                                epilog="p2p-node doctor --config FILE checks a node's config, its way into the "
                                       "network and its gossip mesh (p2p-node doctor --help).")
    p.add_argument("--config", required=True, help="YAML config file (see node/*.yaml)")
    p.add_argument("--listen-port", type=int, help="libp2p TCP port (0 picks a free one); overrides node.listen_port")
    p.add_argument("--listen-host", help="address to listen on; overrides node.listen_host")
    p.add_argument("--http-listen", metavar="HOST:PORT", help="health/metrics/API listener; overrides http.listen")
    p.add_argument("--data-dir", help="identity, journal and ledger directory; overrides node.data_dir")
    p.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                   help="bootstrap address (repeatable); replaces network.bootstrap_peers")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="overrides logging.level (P2P_LOG=debug works too)")
    p.add_argument("--log-format", choices=["text", "json"], help="overrides logging.format")
    p.add_argument("--console", choices=["auto", "on", "off"], default="auto",
                   help="auto: interactive on a terminal, run piped commands, none when stdin is /dev/null")
    return p


def _console_mode(choice: str) -> str:
    """'interactive', 'piped' or 'off'."""
    if choice == "off":
        return "off"
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return "off"
    if sys.stdin.isatty():
        return "interactive"
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode) or choice == "on":
        return "piped"
    return "off"


def build_config(args: argparse.Namespace) -> Any:
    cfg = load_config(args.config)
    overrides: dict[str, Any] = {
        "node.listen_port": args.listen_port,
        "node.listen_host": args.listen_host,
        "node.data_dir": args.data_dir,
        "http.listen": args.http_listen,
        "network.bootstrap_peers": args.bootstrap,
        "logging.level": args.log_level or (os.environ.get("P2P_LOG") or None),
        "logging.format": args.log_format,
    }
    return apply_overrides(cfg, **overrides)


def write_runtime_file(node: Node, http_url: str) -> str:
    """``<data_dir>/node.json``: where a running node listens, for p2p-ctl, scripts and tests."""
    path = os.path.join(node.data_dir, "node.json")
    doc = {"pid": os.getpid(), "peer_id": str(node.peer_id), "role": node.role,
           "listen_addrs": [str(a) for a in node.listen_addrs()], "http": http_url,
           "task_lane_port": node.task_lane_port}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)
    return path


async def run_node(cfg: Any, console_mode: str) -> int:
    from p2p_fast.app.api.front import LazyFront
    from p2p_fast.app.api.server import bind_socket, serve_http
    from p2p_fast.app.console import Console, read_stdin_line
    from p2p_fast.app.node import Node

    node = Node(cfg)
    http_sock = bind_socket(cfg.http.listen)
    host, port = http_sock.getsockname()[:2]
    http_url = f"http://{host}:{port}"
    lane_sock = None
    if cfg.http.task_lane:  # on the HTTP API's host: whoever reaches the API reaches the lane
        try:
            lane_sock = bind_socket(f"{cfg.http.listen.rpartition(':')[0]}:{cfg.http.task_lane_port}", "task lane",
                                    "set http.task_lane_port to a free port (0 picks one) or http.task_lane: false")
        except BaseException:
            http_sock.close()
            raise
        node.task_lane_port = lane_sock.getsockname()[1]
    exit_code = 0

    async def serve(stop_scope: trio.CancelScope) -> None:
        async with node.running(), trio.open_nursery() as nursery:
            def full_app() -> Any:
                # FastAPI is imported here, on the first request a probe or a scrape is not (api.front).
                from p2p_fast.app.api.app import create_app, wrap

                return wrap(create_app(node), cfg.http.max_body_bytes)  # task routes included when the node has them

            from p2p_fast.app.api.fast_submit import PATH as SUBMIT_PATH, FastSubmit
            from p2p_fast.app.api.lean_routes import LeanRoutes

            fast = LeanRoutes(node, node.api_token, cfg.http.max_body_bytes).table()
            fast["POST", SUBMIT_PATH] = FastSubmit(lambda: node.tasks, node.api_token, cfg.http.max_body_bytes)
            front = LazyFront(node, full_app, metrics_public=cfg.http.metrics_public, fast=fast)
            await nursery.start(serve_http, front, http_sock)
            if lane_sock is not None:
                from p2p_fast.app.api.lane import TaskLane

                lane = TaskLane(lambda: node.tasks, node.events, node.api_token, cfg.http.max_body_bytes,
                                lambda: str(node.peer_id))
                await nursery.start(lane.serve, lane_sock)
            write_runtime_file(node, http_url)
            settle_gc()
            log.info("http listener on %s (healthz, readyz, metrics, /v1; dashboard: %s/ui)", http_url, http_url)
            done = trio.Event()

            async def signals() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                    async for signum in sigs:
                        log.info("received %s, stopping", signal.Signals(signum).name)
                        done.set()
                        return

            async def console_task() -> None:
                nonlocal exit_code
                console = Console(node)
                if console_mode == "interactive":
                    console.out("p2p-node console; type 'help' for commands")
                wait = cfg.network.connection_timeout if console_mode == "piped" else None
                exit_code = await console.run_lines(read_stdin_line, wait_ready=wait)
                done.set()

            nursery.start_soon(signals)
            if console_mode != "off":
                nursery.start_soon(console_task)
            await done.wait()
            # Leaving node.running() closes streams and the host; bounded so a stuck peer cannot hold us.
            stop_scope.deadline = trio.current_time() + STOP_GRACE_S
            nursery.cancel_scope.cancel()

    try:
        with trio.CancelScope() as stop_scope:
            await serve(stop_scope)
    finally:
        http_sock.close()
        if lane_sock is not None:
            lane_sock.close()
    return exit_code


def find_running_node(cfg: Any) -> str | None:
    """The HTTP URL of a node already running on this config's data dir (its lock is held), else None."""
    from p2p_fast.app.startup import DataDirLock, NodeStartError
    from p2p_fast.app.remote import running_node_url

    lock = DataDirLock(cfg.data_path)
    try:
        lock.acquire()
    except NodeStartError:
        return running_node_url(cfg.data_path)
    lock.release()
    return None


async def run_remote_console(url: str, console_mode: str, token: str | None = None) -> int:
    """Drive the node that already runs on this data dir through its HTTP API (see ``remote``), with the API token
    of the same config (``http.token_file`` or ``P2P_API_TOKEN``) when it has one."""
    import httpx

    from p2p_fast.app.console import Console, read_stdin_line
    from p2p_fast.app.remote import RemoteNode

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        node = await RemoteNode.connect(url, client)
        log.info("a node already runs on this data dir; sending commands to it at %s", url)
        console = Console(node)
        if console_mode == "interactive":
            console.out(f"connected to the running {node.role} node at {url}; type 'help' for commands")
        return await console.run_lines(read_stdin_line, wait_ready=30 if console_mode == "piped" else None)


def configure_logging(level: str, fmt: str) -> None:
    """The node's logging: py-libp2p imported first (its import re-configures its loggers, see
    :func:`p2p_fast.core.logs.setup_logging`), and its network events without tracebacks
    (:mod:`p2p_fast.stack.log_noise`)."""
    import libp2p  # noqa: F401  (the node imports it next anyway)

    from p2p_fast.core.logs import setup_logging
    from p2p_fast.stack.log_noise import NetworkNoise

    setup_logging(level, fmt, filters=[NetworkNoise()])


def settle_gc() -> None:
    """End the start-up's pause of the cyclic garbage collector (:func:`main`): what start-up built (modules, classes,
    the host, the services) is frozen, so no collection ever walks it again, and collection resumes for the rest.

    Why: start-up allocates the ~1000 modules' objects and nothing else; the collections that allocation triggered
    (about 200, one of them full) found next to no garbage and cost about 0.03 s of every node's start
    (bench/RESULTS.md, "Start-up CPU and RSS"). Frozen objects stay in memory as before; the collector skips them."""
    gc.freeze()
    gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    collecting = gc.isenabled()
    gc.disable()  # until the node has started (settle_gc), another command starts, or main returns
    try:
        return _main(argv, collecting)
    finally:
        if collecting:
            gc.enable()


def _main(argv: Sequence[str] | None, collecting: bool) -> int:
    from p2p_fast.stack.patches import prepare_imports

    prepare_imports()  # before anything imports py-libp2p (the other patches are applied when the host is built)
    from p2p_fast.app.api import lean_http

    lean_http.install()  # the same for hypercorn's HTTP/2 and WebSocket and FastAPI's OpenAPI models
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["doctor"]:
        from p2p_fast.app.doctor import main as doctor_main

        if collecting:
            gc.enable()  # the pause is for a node's start-up only
        return doctor_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        cfg = build_config(args)
    except ConfigError as exc:
        print(f"p2p-node: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(cfg.logging.level, cfg.logging.format)
    from p2p_fast.app.api.server import HttpListenError
    from p2p_fast.stack.identity import IdentityError
    from p2p_fast.app.startup import NodeStartError
    from p2p_fast.app.remote import RemoteError

    console_mode = _console_mode(args.console)
    try:
        url = find_running_node(cfg) if console_mode != "off" else None
        if url is not None:
            from p2p_fast.app.api.token import load_api_token

            if collecting:
                gc.enable()  # a console session of any length: collect as usual
            return trio.run(run_remote_console, url, console_mode, load_api_token(cfg))
        return trio.run(run_node, cfg, console_mode)
    except (NodeStartError, HttpListenError, IdentityError, RemoteError) as exc:
        print(f"p2p-node: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"p2p-node: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
