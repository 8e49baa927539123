"""NAT traversal: circuit relay v2 (hop on the relay role, reservations on unreachable workers), AutoNAT, DCUtR.

Placeholder wiring until the NAT traversal work lands: no relay services are started yet.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio


async def start_nat_services(node: Any, stack: AsyncExitStack, nursery: trio.Nursery) -> Any:
    return None
