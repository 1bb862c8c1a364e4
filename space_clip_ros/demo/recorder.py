"""The demo's recorder: an rclpy node in the demo's own process, spinning in a background thread.

It subscribes to the camera (image, camera_info, exact depth) and to everything the depth node
publishes (depth/image, depth/camera_info, points, depth/colored, depth/confidence, /diagnostics) and hands each
message to a :class:`~space_clip_ros.demo.recording.Recording`. It has its own rclpy context, so it
never disturbs an rclpy the host program may run: :class:`SpinningNode`, which the tests' rclpy
client is too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from space_clip_ros.demo.recording import Recording
from space_clip_ros.msgs import image_msg_to_depth, image_msg_to_rgb
from space_clip_ros.msgs.header import stamp_ns

# Reliable readers match the node's reliable publishers; 10 deep so a busy moment loses nothing.
_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclass(frozen=True)
class RecorderTopics:
    """Absolute topic names the recorder listens to."""

    image: str
    camera_info: str
    ground_truth: str
    depth: str
    depth_info: str
    points: str
    colored: str
    diagnostics: str
    node_name: str  # fully qualified name of the depth node (its diagnostics status starts with it)
    confidence: str = ""  # depth/confidence ("": not recorded)


class SpinningNode:
    """An rclpy context, node and executor of its own, spinning in a background thread from
    construction until :meth:`close`; it never disturbs an rclpy the host program may run.

    Args:
        name: the node's name.
        domain_id: ROS domain (default: ``ROS_DOMAIN_ID``, as rclpy reads it).
    """

    def __init__(self, name: str, domain_id: int | None = None) -> None:
        self.context = Context()
        rclpy.init(context=self.context, **({} if domain_id is None else {"domain_id": domain_id}))
        self.node = rclpy.create_node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self._executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)
        self._executor.shutdown()


class DemoRecorder(SpinningNode):
    """Starts on construction; :meth:`close` stops it. Graph queries for the demo's waits too."""

    def __init__(self, topics: RecorderTopics, recording: Recording) -> None:
        super().__init__("space_clip_demo_recorder")
        self.topics = topics
        self.recording = recording
        node, rec = self.node, recording
        node.create_subscription(
            Image, topics.image, lambda m: rec.add_input(stamp_ns(m.header.stamp), image_msg_to_rgb(m)), _QOS
        )
        node.create_subscription(CameraInfo, topics.camera_info, lambda m: rec.count_camera_info(depth=False), _QOS)
        node.create_subscription(
            Image, topics.ground_truth,
            lambda m: rec.add_ground_truth(stamp_ns(m.header.stamp), image_msg_to_depth(m)), _QOS,
        )
        node.create_subscription(Image, topics.depth, self._on_depth, _QOS)
        node.create_subscription(CameraInfo, topics.depth_info, rec.add_depth_info, _QOS)
        node.create_subscription(PointCloud2, topics.points, rec.add_cloud, _QOS)
        node.create_subscription(Image, topics.colored, rec.add_colored, _QOS)
        if topics.confidence:
            node.create_subscription(
                Image, topics.confidence,
                lambda m: rec.add_confidence(stamp_ns(m.header.stamp), image_msg_to_depth(m)), _QOS,
            )
        node.create_subscription(DiagnosticArray, topics.diagnostics, self._on_diagnostics, _QOS)

    def _on_depth(self, message: Image) -> None:
        received_at = time.time()  # the camera stamps with the system clock too
        self.recording.add_depth(stamp_ns(message.header.stamp), received_at, image_msg_to_depth(message))

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith(self.topics.node_name + ":"):
                self.recording.set_diagnostics({kv.key: kv.value for kv in status.values})

    def subscribers(self, topic: str) -> int:
        return self.node.count_subscribers(topic)

    def publishers(self, topic: str) -> int:
        return self.node.count_publishers(topic)
