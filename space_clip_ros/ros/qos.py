"""QoS profiles of the depth node."""

from __future__ import annotations

from collections.abc import Iterable

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

#: History depth of every output publisher: a late subscriber wants the newest frames, not a backlog.
OUTPUT_HISTORY_DEPTH = 5
DIAGNOSTICS_HISTORY_DEPTH = 10

_RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}


def sensor_input_qos(depth: int) -> QoSProfile:
    """rclpy's sensor-data profile (best effort, keep last, volatile) with ``depth`` as history.

    A best-effort reader matches both reliable and best-effort publishers (a reliable reader would
    not match a best-effort camera driver).
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=qos_profile_sensor_data.reliability,
        durability=qos_profile_sensor_data.durability,
    )


def _keep_last(reliability: str, depth: int) -> QoSProfile:
    """``reliable`` or ``best_effort``, keep last ``depth``, volatile."""
    if reliability not in _RELIABILITY:
        raise ValueError(f"reliability must be one of {tuple(_RELIABILITY)}, got '{reliability}'")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def image_input_qos(reliability: str, depth: int) -> QoSProfile:
    """Profile of an image subscription: ``reliable`` or ``best_effort``, keep last ``depth``, volatile."""
    return _keep_last(reliability, depth)


def matching_reliability(offered: Iterable[ReliabilityPolicy]) -> str:
    """``image_reliability: auto``'s choice for an image topic whose publishers offer ``offered``.

    ``reliable`` when every publisher offers reliable: a frame larger than the middleware sends in
    one piece (Fast DDS: 640x480 rgb8 is 0.9 MB, beyond its 512 KB shared-memory segment) travels
    in fragments, and a best-effort reader loses the whole frame with any fragment (measured on 2
    cores: 0.47 of 5 frames/s arrived best effort, 4.97 reliable). ``best_effort`` when any publisher
    offers best effort (a reliable reader would not match it), and while none is seen yet.
    """
    policies = list(offered)
    if policies and all(policy == ReliabilityPolicy.RELIABLE for policy in policies):
        return "reliable"
    return "best_effort"


def best_effort_readers(readers: Iterable[tuple[str, ReliabilityPolicy]]) -> list[str]:
    """The names of the best-effort readers among ``(node name, reliability)`` subscriptions: those a
    message over ``ONE_PIECE_BYTES`` (``outputs.options``) reaches only now and then."""
    return sorted({name for name, reliability in readers if reliability == ReliabilityPolicy.BEST_EFFORT})


def output_qos(reliability: str) -> QoSProfile:
    """Profile of the depth, camera info, cloud, colour and embedding publishers."""
    return _keep_last(reliability, OUTPUT_HISTORY_DEPTH)


def diagnostics_qos() -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=DIAGNOSTICS_HISTORY_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
