"""Decentralized task distribution: capability-based assignment, retries, rewards, durable results, task API.

Layout (one way, bottom up): ``builtins`` and ``types`` (what a task is) | ``pool`` (process pool) | ``wire`` (frames
on streams) | ``journal`` and ``ledger`` (SQLite: tasks, receipts; with ``credit`` and ``reputation``) | ``worker``
(runs tasks for others) and ``dispatcher`` (gets our tasks done, from ``spec``, ``scheduler``, ``retries``,
``outcomes``, ``queues``, ``links``, ``attempts``, ``receipts``, ``finder`` and ``table``; ``redundancy`` for
replicated tasks) | ``service``
(``node.tasks``). The HTTP routes (``p2p_fast.app.api.tasks``) are the application's, built from the service. What
the package takes from the node is listed in ``ports.TaskEnv``. The wire protocol is described in
``docs/protocol.md``.

This package's top level stays import-light: process-pool children import ``p2p_fast.protocols.tasks._child`` and must not
pay for libp2p.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from p2p_fast.protocols.tasks.builtins import InvalidPayload
from p2p_fast.protocols.tasks.types import task_type

if TYPE_CHECKING:
    from p2p_fast.protocols.tasks.ports import TaskEnv
    from p2p_fast.protocols.tasks.service import TaskService

__all__ = ["InvalidPayload", "start_task_service", "task_type"]


async def start_task_service(env: TaskEnv, stack: AsyncExitStack) -> TaskService:
    """Start the task service on what ``env`` gives it and return it (``node.tasks``). Its tasks run in a nursery of
    its own on ``stack``, stopped and closed (pool children killed, journal committed) when the node stops."""
    from p2p_fast.protocols.tasks.service import TaskService

    service = TaskService(env)
    await service.start(stack)
    return service
