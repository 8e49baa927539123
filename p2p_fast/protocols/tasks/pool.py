"""A trio-native process pool for task functions: CPU-bound work never runs on the node's event loop.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot stop one running call. A task that times out or is
cancelled must really stop, so each child here is a plain subprocess we own (``python -m p2p_fast.protocols.tasks._child``)
that runs one call at a time; stopping a call kills that child (SIGKILL) and a fresh one takes its place on the next
call. Children start lazily, are reused, and import nothing of the node (no libp2p), so they start in ~50 ms.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)
_LEN = struct.Struct(">I")
_PKG_ROOT = str(Path(__file__).resolve().parents[3])  # the directory holding p2p_fast


class TaskFailed(Exception):
    """The task function raised (``invalid`` says the payload was wrong for the type, a permanent failure)."""

    def __init__(self, message: str, invalid: bool = False) -> None:
        super().__init__(message)
        self.invalid = invalid


class PoolClosed(RuntimeError):
    pass


class _Child:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.buf = bytearray()

    async def call(self, fn_ref: str, payload: bytes) -> tuple[str, Any]:
        body = pickle.dumps((fn_ref, payload), protocol=pickle.HIGHEST_PROTOCOL)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        await self.proc.stdin.send_all(_LEN.pack(len(body)) + body)
        head = await self._read(4)
        reply = pickle.loads(await self._read(_LEN.unpack(head)[0]))
        return reply  # type: ignore[no-any-return]

    async def _read(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        while len(self.buf) < n:
            chunk = await self.proc.stdout.receive_some(max(65536, n - len(self.buf)))
            if not chunk:
                raise BrokenPipeError(f"pool child {self.proc.pid} exited ({self.proc.returncode})")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def kill(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            with trio.move_on_after(5):
                await self.proc.wait()
            for s in (self.proc.stdin, self.proc.stdout):
                if s is not None:
                    try:
                        await s.aclose()
                    except Exception:
                        pass


class ProcessPool:
    """``size`` concurrent calls at most; ``run`` waits for a free child."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._sem = trio.Semaphore(max(1, self.size))
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()
        self._closed = False
        self.started = 0
        self.killed = 0

    @property
    def busy(self) -> int:
        return (max(1, self.size) - self._sem.value) if self.size else 0

    async def _spawn(self) -> _Child:
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "p2p_fast.protocols.tasks._child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, start_new_session=True)
        self.started += 1
        child = _Child(proc)
        self._all.add(child)
        return child

    async def run(self, fn_ref: str, payload: bytes, timeout: float) -> bytes:
        """Run ``fn_ref(payload)`` in a child; raise ``trio.TooSlowError`` after ``timeout`` (the child is killed),
        :class:`TaskFailed` when the function raised. Cancelling the caller kills the child too."""
        if self.size == 0:
            raise PoolClosed("this node has no task slots (tasks.slots is 0)")
        async with self._sem:
            if self._closed:
                raise PoolClosed("process pool is closed")
            child = self._idle.pop() if self._idle else None
            if child is not None and child.proc.poll() is not None:  # died while idle: replace it
                self._all.discard(child)
                await child.kill()
                child = None
            ok = False
            try:
                with trio.fail_after(timeout):
                    if child is None:
                        child = await self._spawn()
                    try:
                        status, value = await child.call(fn_ref, payload)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, EOFError,
                            pickle.UnpicklingError) as exc:
                        # The child died under the call (killed from outside, out of memory): a failed attempt
                        # the submitter retries, not an error of the worker.
                        raise TaskFailed(f"pool child {child.proc.pid} died during the task "
                                         f"({type(exc).__name__}: {exc})") from None
                ok = True
            finally:
                if child is not None:
                    if ok and not self._closed:
                        self._idle.append(child)
                    else:
                        self._all.discard(child)
                        self.killed += 1
                        await child.kill()
        if status == "ok":
            return value  # type: ignore[no-any-return]
        raise TaskFailed(str(value), invalid=(status == "invalid"))

    async def aclose(self) -> None:
        self._closed = True
        children, self._all, self._idle = list(self._all), set(), []
        for child in children:
            await child.kill()
