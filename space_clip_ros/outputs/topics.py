"""The output topics of a frame, defined once: relative name, message type, the DepthOutputs field.

The depth node creates one publisher per entry (under its namespace, or under each camera's) and
publishes whatever :class:`~space_clip_ros.outputs.builder.DepthOutputs` holds for it; the bag
tool writes the same names under the image's namespace. A new output is one entry here, one field
of DepthOutputs and the code that fills it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float32MultiArray

DEPTH_IMAGE = "depth/image"
DEPTH_CAMERA_INFO = "depth/camera_info"
POINTS = "points"
DEPTH_COLORED = "depth/colored"
DEPTH_CONFIDENCE = "depth/confidence"
IMAGE_EMBEDDING_STAMPED = "clip/image_embedding_stamped"
IMAGE_EMBEDDING = "clip/image_embedding"


@dataclass(frozen=True)
class OutputTopic:
    """One output: its topic name relative to the node's (or camera's) namespace, its message
    class, the :class:`~space_clip_ros.outputs.builder.DepthOutputs` attribute holding it, and the
    bool output option that switches it on (None: always made, when it can be)."""

    name: str
    message_type: type
    field: str
    option: str | None = None

    def asked_for(self, options) -> bool:
        """Whether ``options`` (an OutputOptions) ask for this output."""
        return self.option is None or bool(getattr(options, self.option))


#: Every output topic, in publishing order (the depth image first: consumers pair the rest with it).
OUTPUT_TOPICS: tuple[OutputTopic, ...] = (
    OutputTopic(DEPTH_IMAGE, Image, "depth_image"),
    OutputTopic(DEPTH_CAMERA_INFO, CameraInfo, "depth_camera_info"),
    OutputTopic(POINTS, PointCloud2, "points", "publish_points"),
    OutputTopic(DEPTH_CONFIDENCE, Image, "confidence", "publish_confidence"),
    OutputTopic(DEPTH_COLORED, Image, "colored", "publish_colored"),
    # The embedding with the image's header: sensor_msgs/Image 32FC1, height 1, width = its size
    # (docs/ros_node.md, "Stamped embedding", says why this type); then the same vector without one.
    OutputTopic(IMAGE_EMBEDDING_STAMPED, Image, "embedding_stamped", "publish_embedding"),
    OutputTopic(IMAGE_EMBEDDING, Float32MultiArray, "embedding", "publish_embedding"),
)
