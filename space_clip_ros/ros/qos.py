"""QoS profiles of the depth node."""

from __future__ import annotations

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


def output_qos(reliability: str) -> QoSProfile:
    """Profile of the depth, camera info, cloud, colour and embedding publishers."""
    if reliability not in _RELIABILITY:
        raise ValueError(f"reliability must be one of {tuple(_RELIABILITY)}, got '{reliability}'")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=OUTPUT_HISTORY_DEPTH,
        reliability=_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def diagnostics_qos() -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=DIAGNOSTICS_HISTORY_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
