"""Header stamps: one conversion to nanoseconds, one copy."""

from __future__ import annotations

from typing import Any

from builtin_interfaces.msg import Time


def stamp_ns(stamp: Any) -> int:
    """A builtin_interfaces/Time (or anything with ``sec`` and ``nanosec``) in nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def copy_stamp(stamp: Any) -> Time:
    """A new Time equal to ``stamp`` (outputs must not share the input message's objects)."""
    return Time(sec=stamp.sec, nanosec=stamp.nanosec)
