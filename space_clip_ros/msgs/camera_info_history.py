"""The CameraInfo that belongs to an image: same stamp, else the nearest one, by a stated rule.

A camera driver publishes each image with a CameraInfo of the same header stamp, but the two travel
on separate topics: the CameraInfo of a frame may arrive just before or just after the image, and
a calibration can change between frames (zoom, a new mode, set_camera_info). Taking "the latest
CameraInfo" pairs an image with its neighbour's calibration whenever they cross. A
:class:`CameraInfoHistory` keeps the last few CameraInfo messages and picks, for an image stamp:

1. one with the same stamp (the newest, if several were received);
2. with ``tolerance_s > 0``: else the one with the nearest stamp, if it is within ``tolerance_s``
   (on a tie, the earlier one: the calibration in force when the image was taken); else none, and
   :attr:`CameraInfoMatch.description` names both stamps, for the caller's (throttled) warning;
3. with ``tolerance_s <= 0`` (for cameras that publish CameraInfo rarely, or with stamps unrelated
   to the images'): else the one that *arrived* nearest to the image when both arrival times are
   known (a bag's log times), else the latest one added, whatever its stamp. Without arrival times
   this is the usual "latest CameraInfo" rule.

Every time is in integer nanoseconds (``sec * 10**9 + nanosec``); nothing here needs rclpy or a
clock: arrival times are whatever the caller passes (a node's receive time, a bag's log time).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from sensor_msgs.msg import CameraInfo

from space_clip_ros.msgs.header import stamp_ns

__all__ = ["CameraInfoHistory", "CameraInfoMatch", "format_stamp"]

_NS_PER_S = 1_000_000_000


def format_stamp(stamp_ns: int) -> str:
    """A stamp in seconds with all nine decimals (``12.000000345``): exact, unlike a float."""
    seconds, nanoseconds = divmod(int(stamp_ns), _NS_PER_S)
    return f"{seconds}.{nanoseconds:09d}"


def _describe_offset(offset_ns: int) -> str:
    direction = "after" if offset_ns > 0 else "before"
    return f"{abs(offset_ns) / _NS_PER_S:.3f} s {direction}"


@dataclass(frozen=True)
class CameraInfoMatch:
    """The outcome of :meth:`CameraInfoHistory.lookup`; true when a CameraInfo was found.

    Attributes:
        info: the CameraInfo for the image, or None.
        rule: how it was chosen: "exact" (same stamp), "nearest" (nearest stamp within the
            tolerance), "arrival" (arrived nearest to the image), "latest" (latest added), or
            "none".
        offset_ns: the chosen (or, for "none", the nearest) CameraInfo's stamp minus the image
            stamp; None when the history is empty.
        description: one line for logs naming the image stamp and the CameraInfo stamp.
    """

    info: CameraInfo | None
    rule: str
    offset_ns: int | None
    description: str

    def __bool__(self) -> bool:
        return self.info is not None


@dataclass(frozen=True)
class _Entry:
    sequence: int  # order of arrival in this history: larger is newer
    stamp_ns: int
    arrival_ns: int | None
    info: CameraInfo


class CameraInfoHistory:
    """The last ``max_size`` CameraInfo messages, looked up by image stamp (rules in the module notes).

    ``max_size=None`` keeps everything (a bag tool that reads all CameraInfo first). Adding and
    looking up cost O(log n) plus, once full, an O(n) removal of the oldest entry. Not
    thread-safe: guard it with a lock when the CameraInfo and image callbacks run in parallel.
    """

    def __init__(self, tolerance_s: float = 0.0, max_size: int | None = 30) -> None:
        if math.isnan(tolerance_s):
            raise ValueError("tolerance_s is NaN; expected seconds (<= 0: match any stamp)")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be >= 1 or None (unbounded), got {max_size}")
        self.tolerance_s = float(tolerance_s)
        self.max_size = max_size
        self._tolerance_ns = (
            math.inf if math.isinf(self.tolerance_s) else round(self.tolerance_s * _NS_PER_S)
        )
        self._next_sequence = 0
        self._order: deque[_Entry] = deque()  # oldest first
        self._by_sequence: dict[int, _Entry] = {}
        self._by_stamp: list[tuple[int, int]] = []  # sorted (stamp_ns, sequence)
        self._by_arrival: list[tuple[int, int]] = []  # sorted (arrival_ns, sequence), known ones only

    def __len__(self) -> int:
        return len(self._order)

    @property
    def latest(self) -> CameraInfo | None:
        """The CameraInfo added last, or None."""
        return self._order[-1].info if self._order else None

    def clear(self) -> None:
        self._order.clear()
        self._by_sequence.clear()
        self._by_stamp.clear()
        self._by_arrival.clear()

    def add(self, info: CameraInfo, arrival_ns: int | None = None) -> None:
        """Keep ``info``; ``arrival_ns`` (receive or log time) is only used by the ``tolerance_s <= 0`` rule."""
        entry = _Entry(self._next_sequence, stamp_ns(info.header.stamp), arrival_ns, info)
        self._next_sequence += 1
        self._order.append(entry)
        self._by_sequence[entry.sequence] = entry
        bisect.insort(self._by_stamp, (entry.stamp_ns, entry.sequence))
        if arrival_ns is not None:
            bisect.insort(self._by_arrival, (int(arrival_ns), entry.sequence))
        if self.max_size is not None and len(self._order) > self.max_size:
            self._forget(self._order.popleft())

    def _forget(self, entry: _Entry) -> None:
        del self._by_sequence[entry.sequence]
        del self._by_stamp[bisect.bisect_left(self._by_stamp, (entry.stamp_ns, entry.sequence))]
        if entry.arrival_ns is not None:
            del self._by_arrival[bisect.bisect_left(self._by_arrival, (int(entry.arrival_ns), entry.sequence))]

    def lookup_header(self, header: Any, arrival_ns: int | None = None) -> CameraInfoMatch:
        """:meth:`lookup` for an image's std_msgs/Header."""
        return self.lookup(stamp_ns(header.stamp), arrival_ns)

    def lookup(self, stamp_ns: int, arrival_ns: int | None = None) -> CameraInfoMatch:
        """The CameraInfo for an image stamped ``stamp_ns`` (which arrived at ``arrival_ns``, if known)."""
        image = format_stamp(stamp_ns)
        if not self._order:
            return CameraInfoMatch(None, "none", None, f"no CameraInfo received yet (image stamp {image})")
        nearest = self._nearest(self._by_stamp, stamp_ns)
        offset = nearest.stamp_ns - stamp_ns
        if offset == 0:
            return CameraInfoMatch(nearest.info, "exact", 0, f"CameraInfo with the image's stamp {image}")
        if self.tolerance_s > 0.0:
            if abs(offset) <= self._tolerance_ns:
                return CameraInfoMatch(
                    nearest.info, "nearest", offset,
                    f"nearest CameraInfo, stamp {format_stamp(nearest.stamp_ns)}, {_describe_offset(offset)} "
                    f"the image stamp {image} (tolerance {self.tolerance_s:g} s)",
                )
            return CameraInfoMatch(
                None, "none", offset,
                f"no CameraInfo within {self.tolerance_s:g} s of the image stamp {image}: the nearest of the "
                f"{len(self)} kept has stamp {format_stamp(nearest.stamp_ns)} ({_describe_offset(offset)})",
            )
        if arrival_ns is not None and self._by_arrival:
            chosen = self._nearest(self._by_arrival, int(arrival_ns))
            rule, how = "arrival", "the CameraInfo that arrived nearest to the image"
        else:
            chosen = self._order[-1]
            rule, how = "latest", "the latest CameraInfo"
        offset = chosen.stamp_ns - stamp_ns
        return CameraInfoMatch(
            chosen.info, rule, offset,
            f"{how}, stamp {format_stamp(chosen.stamp_ns)} ({_describe_offset(offset)} the image stamp "
            f"{image}; stamps are not matched with tolerance {self.tolerance_s:g} s)",
        )

    def _nearest(self, keys: list[tuple[int, int]], time_ns: int) -> _Entry:
        """The entry whose key time is nearest ``time_ns``: earlier on a tie, newest among equal times."""
        after = bisect.bisect_left(keys, (time_ns, -1))
        candidates = []
        if after > 0:
            candidates.append(keys[after - 1])  # latest time before; newest of that time (sorted by sequence)
        if after < len(keys):
            # Earliest time at or after; the newest of the entries sharing it is the last of their run.
            run_end = bisect.bisect_right(keys, (keys[after][0], math.inf)) - 1
            candidates.append(keys[run_end])
        best = min(candidates, key=lambda key: (abs(key[0] - time_ns), key[0]))
        return self._by_sequence[best[1]]
