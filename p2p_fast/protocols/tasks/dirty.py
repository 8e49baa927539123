"""The peers whose counters changed since they were last written (reputation, credit): written lazily in batches."""

from __future__ import annotations

from typing import Callable


class DirtyPeers(set[str]):
    """A set of peer ids that calls ``on_dirty`` when it stops being empty: the writer's loop may sleep long while
    nothing is pending and must wake for the first change."""

    def __init__(self) -> None:
        super().__init__()
        self.on_dirty: Callable[[], None] = lambda: None

    def touch(self, peer: str) -> None:
        if not self:
            self.on_dirty()
        self.add(peer)
