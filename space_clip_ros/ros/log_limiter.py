"""Suppress repeats of the same log message for a while (a camera sending 30 bad frames a second
must not flood the log, but each *different* problem must still be reported at once).

rclpy's ``throttle_duration_sec`` throttles per call site, which would hide a second, different
error reported from the same line; this keys on the message text instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RepeatLimiter:
    """``should_log(text)`` is True the first time a text is seen and again once ``period`` passed."""

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 256) -> None:
        self._period_s = period_s
        self._clock = clock
        self._max_keys = max_keys
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def should_log(self, text: str) -> tuple[bool, int]:
        """(log it now?, how many repeats were suppressed since it was last logged)."""
        now = self._clock()
        with self._lock:
            last = self._last_logged.get(text)
            if last is not None and now - last < self._period_s:
                self._suppressed[text] = self._suppressed.get(text, 0) + 1
                return False, 0
            if last is None and len(self._last_logged) >= self._max_keys:
                # Bounded memory: texts can carry sizes or byte counts that vary without end.
                oldest = min(self._last_logged, key=self._last_logged.get)
                del self._last_logged[oldest]
                self._suppressed.pop(oldest, None)
            self._last_logged[text] = now
            return True, self._suppressed.pop(text, 0)
