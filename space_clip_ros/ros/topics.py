"""The depth node's topic names (relative, so namespaces and remapping apply) and their table.

One table read by the node (names), the RViz-config test and the docs (topic table), so they
cannot disagree. With several cameras (parameter ``cameras``) each camera's topics are the same
names under the camera's name (:func:`camera_topics`): ``front/image``, ``front/depth/image`` ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from space_clip_ros.msgs.image import COMPRESSED_FORMATS
from space_clip_ros.outputs.topics import (
    DEPTH_CAMERA_INFO,
    DEPTH_COLORED,
    DEPTH_CONFIDENCE,
    DEPTH_IMAGE,
    IMAGE_EMBEDDING,
    IMAGE_EMBEDDING_STAMPED,
    OUTPUT_TOPICS,
    POINTS,
)

# Inputs
IMAGE = "image"
COMPRESSED_SUFFIX = "compressed"  # image_transport's name for the compressed sub-topic
CAMERA_INFO = "camera_info"
ANCHOR_POINTS = "anchor_points"  # metric points for scale_anchor sparse_points
# Outputs: the frame's outputs are defined with their message types below the ROS layer.
DIAGNOSTICS = "/diagnostics"  # absolute: the diagnostic aggregator listens there


def compressed_image_topic(resolve: Callable[..., str], image: str = IMAGE) -> str:
    """The topic a compressed-input node subscribes to, the way image_transport picks it.

    ``resolve`` is ``Node.resolve_topic_name``; ``image`` the relative image topic (a camera's
    ``front/image``). An explicit remapping of ``<image>/compressed`` wins; otherwise it is the
    (remapped) image topic + ``/compressed``, so that remapping the image topic alone (as the
    launch file does) moves both.
    """
    own_name = f"{image}/{COMPRESSED_SUFFIX}"
    remapped = resolve(own_name)
    if remapped != resolve(own_name, only_expand=True):
        return remapped
    return f"{resolve(image)}/{COMPRESSED_SUFFIX}"


@dataclass(frozen=True)
class CameraTopics:
    """The relative topic names of one camera: its inputs and every output of OUTPUT_TOPICS.

    ``camera`` "" is the single camera of a node without ``cameras``: the plain names.
    """

    camera: str

    def name(self, topic: str) -> str:
        """``topic`` (relative) of this camera."""
        return f"{self.camera}/{topic}" if self.camera else topic

    @property
    def image(self) -> str:
        return self.name(IMAGE)

    @property
    def camera_info(self) -> str:
        return self.name(CAMERA_INFO)

    @property
    def anchor_points(self) -> str:
        return self.name(ANCHOR_POINTS)

    @property
    def outputs(self) -> dict[str, str]:
        """OUTPUT_TOPICS name -> this camera's topic name."""
        return {topic.name: self.name(topic.name) for topic in OUTPUT_TOPICS}


def camera_topics(camera: str) -> CameraTopics:
    """The topics of camera ``camera`` (a name of the ``cameras`` parameter, or "" for the single camera)."""
    return CameraTopics(camera)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    message_type: str
    direction: str  # "subscribes" or "publishes"
    qos: str
    when: str


SENSOR_QOS_TEXT = "sensor data: best effort, keep last `qos_depth`, volatile"
IMAGE_QOS_TEXT = "`image_reliability` (auto: as its publishers), keep last `qos_depth`, volatile"
OUTPUT_QOS_TEXT = "`publisher_reliability` (reliable by default), keep last 5, volatile"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(IMAGE, "sensor_msgs/Image", "subscribes", IMAGE_QOS_TEXT,
              "`image_transport: raw`; any encoding of the list under Cameras (RGB/BGR(A) 8 and 16 bit, mono, "
              "YUV 4:2:2, NV12/NV21/NV24, Bayer 8 and 16 bit)"),
    TopicSpec(f"{IMAGE}/{COMPRESSED_SUFFIX}", "sensor_msgs/CompressedImage", "subscribes", IMAGE_QOS_TEXT,
              f"`image_transport: compressed` ({' or '.join(f.upper() for f in COMPRESSED_FORMATS)}); "
              "follows a remapped `image`"),
    TopicSpec(CAMERA_INFO, "sensor_msgs/CameraInfo", "subscribes", SENSOR_QOS_TEXT,
              "always; matched to each image by stamp (`camera_info_tolerance`); needed for point clouds, "
              "depth/camera_info, focal rescaling and undistortion"),
    TopicSpec(ANCHOR_POINTS, "sensor_msgs/PointCloud2", "subscribes", SENSOR_QOS_TEXT,
              "always (read with `scale_anchor: sparse_points`): metric points (a sparse lidar, stereo or VIO "
              "features) in the camera's optical frame; the next frame fits its scale to them, each cloud once"),
    TopicSpec(DEPTH_IMAGE, "sensor_msgs/Image", "publishes", OUTPUT_QOS_TEXT,
              "every processed frame: 32FC1 metres (NaN invalid; with `out_of_range: rep117` +Inf beyond "
              "max_depth, -Inf below min_depth) or 16UC1 mm (0 invalid)"),
    TopicSpec(DEPTH_CAMERA_INFO, "sensor_msgs/CameraInfo", "publishes", OUTPUT_QOS_TEXT,
              "every processed frame once a CameraInfo has arrived; K, P, size scaled to depth/image"),
    TopicSpec(POINTS, "sensor_msgs/PointCloud2", "publishes", OUTPUT_QOS_TEXT,
              "`publish_points` and a CameraInfo has arrived; float32 xyz (+ rgb), depth_image_proc layout"),
    TopicSpec(DEPTH_CONFIDENCE, "sensor_msgs/Image", "publishes", OUTPUT_QOS_TEXT,
              "`publish_confidence`: 32FC1 per-pixel confidence in (0, 1], depth/image's size, stamp and frame"),
    TopicSpec(DEPTH_COLORED, "sensor_msgs/Image", "publishes", OUTPUT_QOS_TEXT,
              "`publish_colored`: bgr8 colour-mapped depth for viewing"),
    TopicSpec(IMAGE_EMBEDDING_STAMPED, "sensor_msgs/Image", "publishes", OUTPUT_QOS_TEXT,
              "`publish_embedding`: the frame's CLIP image embedding with the image's header (32FC1, height 1, "
              "width = its size)"),
    TopicSpec(IMAGE_EMBEDDING, "std_msgs/Float32MultiArray", "publishes", OUTPUT_QOS_TEXT,
              "`publish_embedding`: the same embedding without a header (dim label `clip_image_embedding`)"),
    TopicSpec(DIAGNOSTICS, "diagnostic_msgs/DiagnosticArray", "publishes", "reliable, keep last 10",
              "once a second: rates, drops, latency, device, model, errors"),
)


def render_markdown_table(topics: Iterable[TopicSpec] = TOPICS) -> str:
    """The topic table of docs/ros_node.md."""
    lines = ["| topic | type | direction | QoS | when |", "|---|---|---|---|---|"]
    for topic in topics:
        lines.append(
            f"| `{topic.name}` | {topic.message_type} | {topic.direction} | {topic.qos} | {topic.when} |"
        )
    return "\n".join(lines) + "\n"
