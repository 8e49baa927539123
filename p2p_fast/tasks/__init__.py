"""Decentralized task distribution (capability-based assignment, retries, rewards, durable results, task API)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio


async def start_task_service(node: Any, stack: AsyncExitStack, nursery: trio.Nursery) -> Any:
    """Start the task service for ``node`` and return it (``node.tasks``); None while not implemented."""
    return None
