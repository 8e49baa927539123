"""``AsyncClient``: the client for asyncio and trio programs (whichever runs it, found with sniffio as anyio does).

The work happens on the same threads as :class:`~p2p_fast.client.Client`; a coroutine waits for a future by having
its completion callback wake the waiting loop (``call_soon_threadsafe`` / a trio token), never by blocking the loop::

    async with AsyncClient("http://127.0.0.1:8080") as client:
        fut = await client.submit(square, 7)
        print(await fut)                                   # 49
        print([x async for x in client.map(square, range(10))])
        print(await client.gather([await client.submit(square, i) for i in range(3)]))

Cancelling the coroutine that awaits a future stops the waiting only; ``await client.cancel(fut)`` stops the task.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, Iterable

import sniffio


async def _wait(cf: Future[Any]) -> Any:
    if not cf.done():
        lib = sniffio.current_async_library()
        if lib == "trio":
            import trio

            token = trio.lowlevel.current_trio_token()
            event = trio.Event()

            def wake(_f: Future[Any]) -> None:
                try:
                    token.run_sync_soon(event.set)
                except trio.RunFinishedError:
                    pass

            cf.add_done_callback(wake)
            await event.wait()
        elif lib == "asyncio":
            import asyncio

            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def wake_asyncio(_f: Future[Any]) -> None:
                def settle() -> None:
                    if not done.done():
                        done.set_result(None)

                try:
                    loop.call_soon_threadsafe(settle)
                except RuntimeError:
                    pass  # the loop closed meanwhile

            cf.add_done_callback(wake_asyncio)
            await done
        else:
            raise RuntimeError(f"AsyncClient runs under asyncio or trio, not {lib}")
    return cf.result()


class AsyncFuture:
    """A task's future for coroutines: ``await fut`` gives the result (or raises ``TaskFailed``)."""

    def __init__(self, cf: Future[Any]) -> None:
        self.cf = cf

    def __await__(self) -> Generator[Any, None, Any]:
        return _wait(self.cf).__await__()

    def done(self) -> bool:
        return self.cf.done()

    def result(self) -> Any:
        """The result of a finished future (``InvalidStateError`` before)."""
        if not self.cf.done():
            from concurrent.futures import InvalidStateError

            raise InvalidStateError("the task has not finished")
        return self.cf.result()


class AsyncClient:
    """Like :class:`~p2p_fast.client.Client`, with coroutines; open it with ``async with``."""

    def __init__(self, api: str | None = None, *, data_dir: str | os.PathLike[str] | None = None,
                 token: str | None = None, timeout: float = 30.0,
                 packages: Iterable[str | os.PathLike[str]] = (), events: bool = True, lane: bool = True) -> None:
        self._args = (api, data_dir, token, timeout, list(packages), events, lane)
        self._client: Any = None

    async def _run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        cf: Future[Any] = Future()

        def call() -> None:
            try:
                cf.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                cf.set_exception(exc)

        import threading

        threading.Thread(target=call, daemon=True).start()
        return await _wait(cf)

    async def __aenter__(self) -> "AsyncClient":
        from p2p_fast.client.sync import Client

        api, data_dir, token, timeout, packages, events, lane = self._args
        self._client = await self._run_sync(lambda: Client(api, data_dir=data_dir, token=token, timeout=timeout,
                                                           packages=packages, events=events, lane=lane))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._run_sync(self._client.close)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("open the AsyncClient first: async with AsyncClient(...) as client")
        return self._client

    async def submit(self, task: str | Callable[..., Any], *args: Any, options: dict[str, Any] | None = None,
                     **kwargs: Any) -> AsyncFuture:
        """Queue one task (a few µs, no I/O on the loop) and return its awaitable future."""
        return AsyncFuture(self.client.submit(task, *args, options=options, **kwargs))

    async def map(self, task: str | Callable[..., Any], *iterables: Iterable[Any], batch_size: int = 1000,
                  options: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """Results in order, at most ``2 * batch_size`` tasks in flight."""
        import collections

        window: collections.deque[Future[Any]] = collections.deque()
        for args in zip(*iterables):
            window.append(self.client.submit(task, *args, options=options))
            if len(window) >= 2 * batch_size:
                yield await _wait(window.popleft())
        while window:
            yield await _wait(window.popleft())

    async def as_completed(self, futures: Iterable[AsyncFuture]) -> AsyncIterator[AsyncFuture]:
        """Each future once, as it finishes."""
        pending = list(futures)
        by_cf = {id(f.cf): f for f in pending}
        done_cf: Future[Any] = Future()
        import threading

        lock = threading.Lock()
        finished: list[Future[Any]] = []
        signal: list[Future[Any]] = [done_cf]

        def on_done(cf: Future[Any]) -> None:
            with lock:
                finished.append(cf)
                if not signal[0].done():
                    signal[0].set_result(None)

        for f in pending:
            f.cf.add_done_callback(on_done)
        left = len(pending)
        while left:
            await _wait(signal[0])
            with lock:
                batch, finished[:] = list(finished), []
                signal[0] = Future()
            for cf in batch:
                left -= 1
                yield by_cf[id(cf)]

    async def gather(self, futures: Iterable[Awaitable[Any]]) -> list[Any]:
        """The results in order; the first failure raises."""
        return [await f for f in futures]

    async def cancel(self, future: AsyncFuture) -> bool:
        return bool(self.client.cancel(future.cf))
