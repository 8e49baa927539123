"""The one exception class both framing implementations raise, so ``except FrameError`` catches either."""

from __future__ import annotations

__all__ = ["FrameError"]


class FrameError(ValueError):
    """Framed input is malformed (bad or truncated varint) or larger than allowed.

    The message names the problem. ``frames`` holds the frames a ``FrameDecoder.feed`` call had completed before it
    hit the fault, so a caller can still deliver them before closing the stream.
    """

    def __init__(self, message: str, frames: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.frames: list[bytes] = [] if frames is None else frames
