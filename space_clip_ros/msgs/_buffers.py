"""Moving bytes between numpy arrays and the ``uint8[] data`` fields of ROS messages."""

from __future__ import annotations

import array

import numpy as np


def message_bytes(data: object) -> np.ndarray:
    """A flat uint8 view of a message ``data`` field, without copying where possible.

    rclpy gives ``array.array('B')``, other readers (rosbags, plain Python) give bytes, numpy arrays
    or lists; the buffer protocol covers all but the last.
    """
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def uint8_array_from(values: np.ndarray) -> array.array:
    """The bytes of ``values`` (C order) as an ``array.array('B')`` ready for a message's ``data``.

    An ``array.array('B')`` is the one value every rclpy release assigns to a ``uint8[]`` field
    without a per-element Python loop: older releases keep it as is, newer ones copy it with one
    memcpy, while ``bytes`` is checked element by element wherever field checks are on.
    """
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(values).view(np.uint8).reshape(-1))
    return out
