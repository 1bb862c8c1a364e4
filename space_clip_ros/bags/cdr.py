"""Raw CDR bytes of a bag <-> rclpy message objects, so the ``msgs`` conversions apply unchanged.

rclpy.serialization is the same C type support the ROS graph uses (no node, no context needed);
a message read and written back this way is byte-identical to the original.
"""

from __future__ import annotations

from typing import TypeVar

from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

MessageT = TypeVar("MessageT")

#: rosbag2 type names of the messages the bag tool reads or writes.
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"

MESSAGE_CLASSES: dict[str, type] = {
    IMAGE_TYPE: Image,
    COMPRESSED_IMAGE_TYPE: CompressedImage,
    CAMERA_INFO_TYPE: CameraInfo,
    POINT_CLOUD_TYPE: PointCloud2,
}


class CdrDecodeError(ValueError):
    """Bytes that are not a message of the expected type (a damaged or mislabelled record)."""


def type_name(message_class: type) -> str:
    """The rosbag2 type name of a message class (``sensor_msgs/msg/Image`` for sensor_msgs.msg.Image)."""
    return f"{message_class.__module__.split('.')[0]}/msg/{message_class.__name__}"


def decode(raw: bytes, message_class: type[MessageT]) -> MessageT:
    """A message object from its CDR bytes (as stored in a bag); raises :class:`CdrDecodeError`."""
    try:
        return deserialize_message(bytes(raw), message_class)
    except RuntimeError as exc:  # rclpy raises RMWError, a RuntimeError, for malformed bytes
        raise CdrDecodeError(f"{len(raw)} bytes are not a {message_class.__name__}: {exc}") from exc


def encode(message: object) -> bytes:
    """The CDR bytes of a message (as a bag stores it)."""
    return serialize_message(message)
