"""Moving bytes between numpy arrays and the ``uint8[] data`` fields of ROS messages.

Large frames (a 640x480 xyzrgb cloud is 9.8 MB) make every extra copy count twice: once for the
memcpy and once for the page faults of the fresh allocation, which on small VMs cost more than the
copy itself. So buffers are filled in place and handed to the message without a copy.
"""

from __future__ import annotations

import array
from typing import TypeVar

import numpy as np

MessageT = TypeVar("MessageT")


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
    """The bytes of ``values`` (C order) as an ``array.array('B')`` ready for a message's ``data``."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(values).view(np.uint8).reshape(-1))
    return out


def zeroed_uint8_array(size: int) -> array.array:
    """A zero-filled ``array.array('B')`` of ``size`` bytes, to be filled through ``np.frombuffer``."""
    return array.array("B", bytes(1)) * size


def new_message(message_type: type[MessageT], **fields: object) -> MessageT:
    """Construct a message whose ``uint8[]`` fields keep an assigned ``array.array('B')`` as is.

    Assign ``data`` after construction (the constructor itself always copies it). rclpy releases
    whose generated messages have ``check_fields`` (Jazzy and later) copy an ``array.array``
    assigned to a ``uint8[]`` field unless field checks are on, so they are switched on for these
    messages; older releases keep the array without being asked. Either way ``bytes`` would be
    slower: with checks on it is verified element by element.
    """
    if "_check_fields" in getattr(message_type, "__slots__", ()):
        return message_type(check_fields=True, **fields)
    return message_type(**fields)
