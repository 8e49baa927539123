"""How many slot-taking tasks a submitter keeps in flight at one worker: a pipelined window per link.

One task per slot (plus one waiting) keeps a worker busy only when a round trip is short next to a task. For short
tasks (a no-op function is ~0.1 ms of work, the round trip to the worker and back several ms) the worker idles
between answers and every task pays a full round of wake-ups on both sides. So the window grows with what the worker
reports: each response carries the task's ``elapsed_s`` and the worker's ``window`` (how many requests it holds for
one submitter without answering "busy": its slots plus ``tasks.queue_limit``). The submitter keeps about
``QUEUE_TIME_S`` of the worker's work queued beyond its slots: many short tasks per link (requests and responses
then travel in batches), one extra for long ones (they stay in the submitter's queue, free to go to whichever worker
frees a slot first, which keeps the tail of a batch short).
"""

from __future__ import annotations

QUEUE_TIME_S = 0.02  # work kept waiting at a worker beyond its slots, in seconds of its recent tasks
EWMA_WEIGHT = 0.2
MIN_ELAPSED_S = 1e-4
MAX_WINDOW = 1024


class LinkWindow:
    """The window of one submitter -> worker link, learned from that worker's responses."""

    __slots__ = ("granted", "elapsed")

    def __init__(self) -> None:
        self.granted: int | None = None  # the worker's own limit, from its last response that said it
        self.elapsed: float | None = None  # running mean of its tasks' run time, seconds

    def observe(self, elapsed_s: float, granted: int | None, ok: bool) -> None:
        """A response from the worker: ``ok`` ones tell how long its tasks take."""
        if granted is not None and granted > 0:
            self.granted = min(int(granted), MAX_WINDOW)
        if ok and elapsed_s >= 0:
            e = max(float(elapsed_s), MIN_ELAPSED_S)
            self.elapsed = e if self.elapsed is None else self.elapsed + EWMA_WEIGHT * (e - self.elapsed)

    def busy(self, inflight: int) -> None:
        """The worker answered "busy" (other submitters fill its queue): hold at what it has now."""
        self.granted = max(1, inflight)

    def limit(self, slots: int) -> int:
        """Tasks that may be in flight at this worker (``slots``: what it advertises); 0 when it has none."""
        if slots <= 0:
            return 0
        base = slots + 1  # before the worker said anything: one waiting per worker, as before windows
        if self.granted is None or self.elapsed is None:
            return base if self.granted is None else min(base, self.granted)
        extra = int(slots * QUEUE_TIME_S / self.elapsed)
        return max(1, min(self.granted, max(base, slots + extra)))
