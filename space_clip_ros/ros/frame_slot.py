"""One-slot "latest frame" mailboxes between subscription callbacks and an inference worker.

Each callback puts its frame in its camera's slot and returns at once; the worker takes the newest
frame of every camera that has one when it is free (:func:`take_waiting`), so that the frames
waiting go through the model together. A frame still waiting when a newer one of the same camera
arrives is dropped and counted, so nothing queues up behind a slow model and the worker always
runs on the freshest pictures.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Generic, TypeVar

FrameT = TypeVar("FrameT")


class LatestFrameSlot(Generic[FrameT]):
    """Thread-safe mailbox holding at most one waiting item.

    ``condition``: shared by the slots of several cameras, so that one worker can wait for any of
    them (:func:`take_waiting`); None: a condition of its own.
    """

    def __init__(self, condition: threading.Condition | None = None) -> None:
        self._condition = condition or threading.Condition()
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
            self._condition.notify_all()
            return replaced

    def take(self, timeout: float | None = None) -> FrameT | None:
        """The waiting frame (removing it), waiting up to ``timeout`` s; None on timeout or close."""
        with self._condition:
            self._condition.wait_for(lambda: self._waiting is not None or self._closed, timeout=timeout)
            return self._take_now()

    def _take_now(self) -> FrameT | None:
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


def take_waiting(
    slots: Sequence[LatestFrameSlot[FrameT]], condition: threading.Condition, timeout: float | None = None
) -> list[tuple[int, FrameT]]:
    """The waiting frame of every slot that has one, as (slot index, frame), waiting up to ``timeout``
    s for the first; [] on timeout or once a slot is closed. ``condition`` is the slots' shared one."""
    with condition:
        condition.wait_for(lambda: any(s._waiting is not None or s._closed for s in slots), timeout=timeout)
        if any(slot._closed for slot in slots):
            return []
        return [(index, frame) for index, slot in enumerate(slots) if (frame := slot._take_now()) is not None]
