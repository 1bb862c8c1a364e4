"""A one-slot "latest frame" mailbox between a subscription callback and an inference worker.

The callback puts each frame in and returns at once; the worker takes the newest frame when it is
free. A frame still waiting when a newer one arrives is dropped and counted, so nothing queues up
behind a slow model and the worker always runs on the freshest picture.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

FrameT = TypeVar("FrameT")


class LatestFrameSlot(Generic[FrameT]):
    """Thread-safe mailbox holding at most one waiting item."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiting: FrameT | None = None
        self._closed = False
        self._dropped = 0

    def put(self, frame: FrameT) -> bool:
        """Store ``frame``, replacing a waiting one; True when a waiting frame was dropped."""
        with self._condition:
            replaced = self._waiting is not None
            if replaced:
                self._dropped += 1
            self._waiting = frame
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> FrameT | None:
        """The waiting frame (removing it), waiting up to ``timeout`` s; None on timeout or close."""
        with self._condition:
            self._condition.wait_for(lambda: self._waiting is not None or self._closed, timeout=timeout)
            frame, self._waiting = self._waiting, None
            return frame

    def close(self) -> None:
        """Wake every waiting ``take`` (used at shutdown); later takes return without waiting."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before the worker took them."""
        with self._condition:
            return self._dropped

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed
