"""A trio-native process pool for task functions: CPU-bound work never runs on the node's event loop.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot stop one running call. A task that times out or is
cancelled must really stop, so each child here is a plain subprocess we own (``python -m p2p_fast.protocols.tasks._child``)
that runs one call at a time; stopping a call kills that child (SIGKILL) and a fresh one takes its place on the next
call. Children start lazily, are reused, and import nothing of the node (no libp2p), so they start in ~50 ms.

A child takes a *batch* of calls in one write (:meth:`ProcessPool.run_batch`) and answers each as it finishes, in
order: for short tasks one pipe write and one wake-up of the child per batch instead of per task (the pipe round
trip per task was a third of a worker's CPU for no-op functions). The parent always knows which call is running --
the first one not answered yet -- so each call keeps its own timeout: the child is killed when the running call
overstays, that call times out, and the calls of the batch it had not started go to a fresh child.
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

    async def send(self, calls: list[PoolCall]) -> None:
        """Hand the child a batch: it runs the calls in order and answers each (``reply``).

        Written straight to the pipe (non-blocking, trio made it so) when it takes it all, which a batch of short
        calls always does: ``send_all`` yields to the scheduler before it writes, and a lone task waited that
        round. The rest, if any, goes through ``send_all``."""
        body = pickle.dumps([(c.fn_ref, c.payload) for c in calls], protocol=pickle.HIGHEST_PROTOCOL)
        stdin = self.proc.stdin
        assert stdin is not None
        data = _LEN.pack(len(body)) + body
        try:
            sent = os.write(stdin.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # the child is gone: as send_all would say it
            raise trio.BrokenResourceError(f"pool child {self.proc.pid}: {exc}") from exc
        if sent < len(data):
            await stdin.send_all(data[sent:])

    def buffered_reply(self) -> tuple[str, Any] | None:
        """The next answer if it has been read already (the child answered several while we were busy), else None."""
        buf = self.buf
        if len(buf) < 4:
            return None
        n = _LEN.unpack_from(buf)[0]
        if len(buf) < 4 + n:
            return None
        reply = pickle.loads(bytes(buf[4:4 + n]))
        del buf[:4 + n]
        return reply  # type: ignore[no-any-return]

    async def reply(self) -> tuple[str, Any]:
        """The answer to the oldest call not answered yet: ``("ok", bytes)``, ``("invalid"|"error", message)``."""
        head = await self._read(4)
        return pickle.loads(await self._read(_LEN.unpack(head)[0]))  # type: ignore[no-any-return]

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


class PoolCall:
    """One call of a batch: what to run, its timeout, and how it ended (``result`` raises or returns that).

    Its caller waits on :meth:`result`; a caller that goes away (cancelled) calls :meth:`abandon`: a running call is
    stopped (its child killed), one not started yet is not run at all when the batch is (re)sent to a child."""

    __slots__ = ("fn_ref", "payload", "timeout", "key", "_done", "_value", "_error", "abandoned", "_batch", "elapsed")

    def __init__(self, fn_ref: str, payload: bytes, timeout: float, key: str | None = None) -> None:
        self.fn_ref = fn_ref
        self.key = fn_ref if key is None else key  # what its run time is learned under (the caller's choice)
        self.payload = payload
        self.timeout = timeout
        self._done = trio.Event()
        self._value: bytes = b""
        self._error: BaseException | None = None
        self.abandoned = False
        self._batch: _Batch | None = None
        self.elapsed: float | None = None  # its run time in the child (from the answer before it to its own)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def finish(self, value: bytes = b"", error: BaseException | None = None) -> None:
        if not self._done.is_set():
            self._value, self._error = value, error
            self._done.set()

    async def result(self) -> bytes:
        if not self._done.is_set():  # a finished call's value at once: Event.wait would yield a scheduler round
            await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value

    def abandon(self) -> None:
        """The caller is gone: stop this call if it runs now, and never start it otherwise."""
        if self._done.is_set():
            return
        self.abandoned = True
        batch = self._batch
        if batch is not None and batch.running is self:
            batch.scope.cancel()  # the runner kills the child and goes on with the rest of the batch
        else:
            self.finish(error=PoolClosed("abandoned by its caller"))


def _answered(call: PoolCall, reply: tuple[str, Any], began: float) -> float:
    """Finish ``call`` with the child's answer; its run time counts from ``began`` (the answer before it). Returns
    now, where the next call's run time starts."""
    now = trio.current_time()
    call.elapsed = now - began
    status, value = reply
    if status == "ok":
        call.finish(value)
    else:
        call.finish(error=TaskFailed(str(value), invalid=(status == "invalid")))
    return now


class _Batch:
    """The runner's view of the call running in a child now (for :meth:`PoolCall.abandon`)."""

    __slots__ = ("running", "scope")

    def __init__(self) -> None:
        self.running: PoolCall | None = None
        self.scope = trio.CancelScope()


class ProcessPool:
    """``size`` concurrent batches at most; ``run`` and ``run_batch`` wait for a free child."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._sem = trio.Semaphore(max(1, self.size))
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()
        self._closed = False
        self.started = 0
        self.killed = 0
        self.batches = 0  # writes to children (one per batch, and one more per restart after a kill)

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
        call = PoolCall(fn_ref, payload, timeout)
        await self.run_batch([call])
        return await call.result()

    async def run_batch(self, calls: list[PoolCall]) -> None:
        """Run ``calls`` one after the other in one child, each finished (``PoolCall.result``) as it ends.

        A call that overstays its timeout gets ``trio.TooSlowError``, one whose child died under it
        :class:`TaskFailed`; in both cases the child is killed and the calls not started yet go to a fresh one.
        Cancelling the runner kills the child and fails every unfinished call with :class:`PoolClosed`."""
        if self.size == 0:
            for c in calls:
                c.finish(error=PoolClosed("this node has no task slots (tasks.slots is 0)"))
            return
        try:
            # A free slot is taken without the scheduler round ``async with self._sem`` costs (the child's reply is
            # awaited below anyway): one round less on a lone task's path.
            try:
                self._sem.acquire_nowait()
            except trio.WouldBlock:
                await self._sem.acquire()
            try:
                todo = [c for c in calls if not c.done]
                while todo:
                    if self._closed:
                        raise PoolClosed("process pool is closed")
                    todo = await self._run_in_child(todo)
            finally:
                self._sem.release()
        except Exception as exc:  # PoolClosed, or no child could be started (OSError)
            error = exc if isinstance(exc, PoolClosed) else TaskFailed(f"cannot run it in a pool child: {exc}")
            for c in calls:
                c.finish(error=error)
        except BaseException:  # cancelled: the child was killed
            for c in calls:
                c.finish(error=PoolClosed("the task's runner was stopped"))
            raise
        finally:
            for c in calls:
                c._batch = None

    async def _run_in_child(self, todo: list[PoolCall]) -> list[PoolCall]:
        """Send ``todo`` to one child and collect the answers; returns the calls to send again (its child died or
        was killed before reaching them)."""
        child = self._idle.pop() if self._idle else None
        if child is not None and child.proc.poll() is not None:  # died while idle: replace it
            self._all.discard(child)
            await child.kill()
            child = None
        batch = _Batch()
        for c in todo:
            c._batch = batch
        ok = False
        try:
            if child is None:
                with trio.fail_after(todo[0].timeout):
                    child = await self._spawn()
            self.batches += 1
            await child.send(todo)
            began = trio.current_time()
            for i, c in enumerate(todo):
                # (A call abandoned after the batch went out still runs in the child, and its answer is dropped: the
                # child reads the whole batch at once. Batches hold short tasks only; see Worker.)
                batch.running = c
                ready = child.buffered_reply()
                if ready is not None:  # no wait, no cancel scopes: most answers of a batch of short calls
                    began = _answered(c, ready, began)
                    continue
                batch.scope = trio.CancelScope()
                deadline = began + c.timeout
                with trio.move_on_at(deadline) as over, batch.scope:
                    try:
                        status, value = await child.reply()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, EOFError,
                            pickle.UnpicklingError) as exc:
                        # The child died under the call (killed from outside, out of memory): a failed attempt the
                        # submitter retries, not an error of the worker.
                        c.finish(error=TaskFailed(f"pool child {child.proc.pid} died during the task "
                                                  f"({type(exc).__name__}: {exc})"))
                        return [r for r in todo[i + 1:] if not r.abandoned]
                if over.cancelled_caught:
                    c.finish(error=trio.TooSlowError())
                    return [r for r in todo[i + 1:] if not r.abandoned]
                if batch.scope.cancelled_caught:  # abandoned while running: stop it
                    c.finish(error=PoolClosed("abandoned by its caller"))
                    return [r for r in todo[i + 1:] if not r.abandoned]
                began = _answered(c, (status, value), began)
            ok = True
            return []
        except trio.TooSlowError:  # no child in time for the first call
            todo[0].finish(error=trio.TooSlowError())
            return todo[1:]
        finally:
            batch.running = None
            if child is not None:
                if ok and not self._closed:
                    self._idle.append(child)
                else:
                    self._all.discard(child)
                    self.killed += 1
                    await child.kill()

    async def aclose(self) -> None:
        self._closed = True
        children, self._all, self._idle = list(self._all), set(), []
        for child in children:
            await child.kill()
