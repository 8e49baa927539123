"""p2p_fast.stack.patches.stream_handler_guard: an exception in a stream handler ends that stream, not the node
(stock first, in a process of its own: the exception tears both hosts down; then patched; then undone)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
from libp2p.network.stream.exceptions import StreamError

from p2p_fast.core import metrics
from p2p_fast.stack.patches.stream_handler_guard import guard_stream_handlers
from host_pair import two_hosts

PROTO = "/p2p-fast/test/boom/1.0.0"
TESTS = Path(__file__).resolve().parents[2]

STOCK = f"""
import sys, trio
sys.path.insert(0, {str(TESTS)!r})
from host_pair import two_hosts

async def boom(stream):
    await stream.read(1)
    raise ValueError("a malformed request")

async def main():
    async with two_hosts() as (a, b):
        b.set_stream_handler({PROTO!r}, boom)
        s = await a.new_stream(b.get_id(), [{PROTO!r}])
        await s.write(b"x")
        await trio.sleep(5)
    print("hosts still up")

try:
    trio.run(main)
except BaseException as exc:
    print("node stopped by", type(exc).__name__, "containing ValueError" if "a malformed request" in repr(exc) else "")
"""


async def _boom(stream) -> None:
    await stream.read(1)
    raise ValueError("a malformed request")


async def _echo(stream) -> None:
    await stream.write(await stream.read(5))
    await stream.close()


def test_stock_a_failing_handler_stops_the_node():
    out = subprocess.run([sys.executable, "-c", STOCK], capture_output=True, text=True, timeout=120)
    assert "node stopped by" in out.stdout and "containing ValueError" in out.stdout, (out.stdout, out.stderr[-2000:])


def test_guarded_a_failing_handler_resets_its_stream_and_the_node_serves_on():
    counter = metrics.MESSAGES_REJECTED.labels(PROTO, "handler-error")
    before = counter._value.get()

    async def main() -> bytes:
        async with two_hosts() as (a, b):
            undo = guard_stream_handlers(b)
            b.set_stream_handler(PROTO, _boom)  # registered after the guard: wrapped too
            b.set_stream_handler("/p2p-fast/test/echo/1.0.0", _echo)
            s = await a.new_stream(b.get_id(), [PROTO])
            await s.write(b"x")
            with trio.fail_after(10):
                while counter._value.get() == before:
                    await trio.sleep(0.02)
            try:
                with trio.fail_after(10):
                    assert await s.read(1) == b""
            except StreamError:
                pass  # reset: the failed stream ends, one way or the other
            echo = await a.new_stream(b.get_id(), ["/p2p-fast/test/echo/1.0.0"])
            await echo.write(b"hello")
            with trio.fail_after(10):
                answer = await echo.read(5)
            undo()
            mux = b.get_mux()
            assert "add_handler" not in vars(mux)
            assert mux.handlers[PROTO] is _boom  # the undo gives the host its own handlers back
            return answer

    assert trio.run(main) == b"hello"
    assert counter._value.get() - before == 1
