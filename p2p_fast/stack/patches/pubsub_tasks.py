"""Each received gossip message is handled in a plain trio task, not a py-libp2p service task.

py-libp2p's ``Pubsub.continuously_read_stream`` hands every received message to ``manager.run_task(push_msg, ...)``.
A service task is heavy for that: a ``FunctionTask`` object with a uuid4 name, a parent lookup, a place in the task
tree, its own cancel scope, stats and a formatted name, about 10 % of a subscriber's CPU per message in a profile at
250 msg/s. The task only has to run ``push_msg`` concurrently with the reader (a slow validator or send must not
stall the connection's reading), so a task in a nursery we own does the same job. One difference is deliberate:
stock lets an unexpected exception from ``push_msg`` cancel the whole Pubsub service; ours logs it and drops that
one message.

Every other ``run_task`` call of the Pubsub goes to its real manager. More than ``MAX_IN_FLIGHT`` messages still
being handled at once (validators stuck) also go to the stock path, which applies py-libp2p's own limits.

Upstream: ``libp2p/pubsub/pubsub.py``, ``Pubsub.continuously_read_stream`` (py-libp2p 0.8.1) -- a limit, not a bug;
no upstream issue was found. A per-instance patch: :func:`spawn_pushes_in` takes the Pubsub (and our nursery) and
replaces its ``_manager`` by a proxy; :func:`stop_spawning_pushes` puts the real manager back.
Shown by ``tests/stack/patches/test_pubsub_tasks.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2048
_QUIET = (trio.ClosedResourceError, trio.BrokenResourceError, ConnectionError)


class PushSpawningManager:
    """A Pubsub's service manager that starts ``run_task(pubsub.push_msg, peer, msg)`` as a plain trio task in
    ``nursery``; everything else is the wrapped manager's."""

    def __init__(self, manager: Any, pubsub: Any, nursery: trio.Nursery) -> None:
        self._manager = manager
        self._pubsub = pubsub
        self._push_func = type(pubsub).push_msg
        self._nursery = nursery
        self.in_flight = 0
        self.handled = 0
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def run_task(self, async_fn: Any, *args: Any, **kwargs: Any) -> None:
        if (not kwargs and getattr(async_fn, "__func__", None) is self._push_func
                and getattr(async_fn, "__self__", None) is self._pubsub and self.in_flight < MAX_IN_FLIGHT):
            try:
                self._nursery.start_soon(self._push, *args)
            except RuntimeError:  # our nursery closed first (shutting down): the stock path decides
                pass
            else:
                self.in_flight += 1
                return
        self._manager.run_task(async_fn, *args, **kwargs)

    async def _push(self, peer_id: Any, msg: Any) -> None:
        try:
            await self._pubsub.push_msg(peer_id, msg)
            self.handled += 1
        except _QUIET as exc:
            self.failed += 1
            log.debug("gossip message from %s dropped, its connection went away: %r", peer_id, exc)
        except Exception:
            self.failed += 1
            log.exception("handling a gossip message from %s failed; the message is dropped", peer_id)
        finally:
            self.in_flight -= 1


def spawn_pushes_in(pubsub: Any, nursery: trio.Nursery) -> PushSpawningManager:
    """Route ``pubsub``'s per-message tasks to ``nursery`` (call once the Pubsub service runs; idempotent)."""
    current = pubsub._manager
    if isinstance(current, PushSpawningManager):
        return current
    proxy = PushSpawningManager(current, pubsub, nursery)
    pubsub._manager = proxy
    return proxy


def stop_spawning_pushes(pubsub: Any) -> None:
    """Undo :func:`spawn_pushes_in`: ``pubsub``'s messages are service tasks again (idempotent)."""
    current = pubsub._manager
    if isinstance(current, PushSpawningManager):
        pubsub._manager = current._manager
