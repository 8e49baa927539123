"""The blocking client: ``Client``, ``as_completed``, ``gather`` and an ``Executor`` over the network."""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import quote

from p2p_fast.client._core import Engine, TaskFailed
from p2p_fast.client._http import Http, resolve_api, resolve_token

PackageRef = dict[str, str]


def as_completed(futures: Iterable[Future[Any]], timeout: float | None = None) -> Iterator[Future[Any]]:
    """Each future once, as it finishes (``concurrent.futures.as_completed``)."""
    return concurrent.futures.as_completed(list(futures), timeout=timeout)


def gather(futures: Iterable[Future[Any]], timeout: float | None = None) -> list[Any]:
    """The results in the futures' order; the first failure raises (:class:`TaskFailed`)."""
    return [f.result(timeout=timeout) for f in futures]


class Client:
    """A network's node reached over HTTP: ``Client(api="http://host:8080")`` or ``Client(data_dir=...)``.

    ``token`` defaults to ``$P2P_API_TOKEN``. Submissions and completions go over the node's task lane when it
    offers one (``lane=False``: HTTP requests and the event stream); completions are pushed (``events=False``:
    long polls only, and no lane). ``packages`` (paths of ``.py`` modules or wheels) are uploaded once
    and shipped with every function task (workers install them per content hash). Close it (or use ``with``): the
    queued tasks are sent first.
    """

    def __init__(self, api: str | None = None, *, data_dir: str | os.PathLike[str] | None = None,
                 token: str | None = None, timeout: float = 30.0,
                 packages: Iterable[str | os.PathLike[str]] = (), events: bool = True, lane: bool = True) -> None:
        self.api = resolve_api(api, data_dir)
        self._engine = Engine(self.api, resolve_token(token), timeout, events, lane)
        self.limits = self._engine.limits
        self.packages: list[PackageRef] = [self.upload(p) for p in packages]

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Send what is queued, stop the threads. Futures not finished yet stay pending."""
        self._engine.close()

    # -- tasks ------------------------------------------------------------------------------------------------------
    def submit(self, task: str | Callable[..., Any], *args: Any, options: dict[str, Any] | None = None,
               packages: Iterable[PackageRef | str | os.PathLike[str]] | None = None,
               **kwargs: Any) -> Future[Any]:
        """Run ``task`` on the network: a callable with ``args``/``kwargs`` (its return value comes back as a Python
        object) or a registered type name with its payload (``str`` or ``bytes``; the result comes back as bytes).

        ``options`` go to the node as they are: ``timeout_s``, ``max_retries``, ``reward`` and whatever else the
        node's ``POST /v1/tasks`` takes. A failed task raises :class:`TaskFailed` from ``result()``."""
        pkgs = self.packages if packages is None else [*self.packages, *self._refs(packages)]
        p = self._engine.make(task, args, kwargs, options, pkgs if callable(task) else None)
        self._engine.enqueue(p)
        return p.future

    def map(self, task: str | Callable[..., Any], *iterables: Iterable[Any], batch_size: int = 1000,
            options: dict[str, Any] | None = None, timeout: float | None = None) -> Iterator[Any]:
        """``task`` over the items (zipped like ``map``), results in order; at most ``2 * batch_size`` in flight."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        window: collections.deque[Future[Any]] = collections.deque()
        items = zip(*iterables)
        for args in items:
            window.append(self.submit(task, *args, options=options))
            if len(window) >= 2 * batch_size:
                yield window.popleft().result(timeout=timeout)
        while window:
            yield window.popleft().result(timeout=timeout)

    def cancel(self, future: Future[Any]) -> bool:
        """Cancel a task that has not finished: the node stops it (on its worker too); False when it is done."""
        if future.done():
            return False
        cancelled = future.cancel()
        task_id = getattr(future, "task_id", None)
        if cancelled and task_id:
            self._engine.completion.cancel(task_id)  # the helper thread tells the node
        return cancelled

    def executor(self) -> "NetworkExecutor":
        """A ``concurrent.futures.Executor`` whose ``submit(fn, *args)`` runs ``fn`` on the network."""
        return NetworkExecutor(self)

    # -- packages ---------------------------------------------------------------------------------------------------
    def upload(self, path: str | os.PathLike[str], data: bytes | None = None) -> PackageRef:
        """Store a ``.py`` module or a wheel on the node (``POST /v1/blobs``) for function tasks to ship."""
        name = Path(path).name
        content = Path(path).read_bytes() if data is None else data
        key = hashlib.sha256(content).hexdigest()
        http = Http(self.api, self._engine.token, self._engine.timeout)
        try:
            doc = http.request("POST", f"/v1/blobs?name={quote(name)}", raw=content, idempotent=True)
        finally:
            http.close()
        if doc.get("sha256") != key:
            raise RuntimeError(f"the node stored {name} under {doc.get('sha256')}, not its sha256 {key}")
        return {"sha256": key, "name": name}

    def _refs(self, packages: Iterable[PackageRef | str | os.PathLike[str]]) -> list[PackageRef]:
        return [p if isinstance(p, dict) else self.upload(p) for p in packages]


class NetworkExecutor(concurrent.futures.Executor):
    def __init__(self, client: Client) -> None:
        self.client = client
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:  # type: ignore[override]
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        return self.client.submit(fn, *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        return self.client.map(fn, *iterables, timeout=timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


__all__ = ["Client", "NetworkExecutor", "TaskFailed", "as_completed", "gather"]
