"""The depth pipeline's topics on a node (either node class): per camera an image subscription (raw
or compressed), a camera_info subscription and an anchor_points subscription (metric points for
``scale_anchor: sparse_points``), a publisher per entry of
:data:`~space_clip_ros.outputs.topics.OUTPUT_TOPICS`; and ``/diagnostics``.

The plain node makes them all at start-up; the lifecycle node makes the publishers (lifecycle
publishers, silent while inactive) on configure and the subscriptions on activate, and removes
them again on deactivate and cleanup. Publishers are made even for outputs that are off, so that
switching one on at runtime needs no new publisher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from space_clip_ros.outputs.builder import DepthOutputs
from space_clip_ros.outputs.options import ONE_PIECE_BYTES
from space_clip_ros.outputs.topics import DEPTH_CAMERA_INFO, DEPTH_IMAGE, OUTPUT_TOPICS, POINTS
from space_clip_ros.ros import topics
from space_clip_ros.ros.depth_pipeline import CameraChannel, DepthPipeline
from space_clip_ros.ros.parameters import DepthNodeSettings
from space_clip_ros.ros.qos import (
    best_effort_readers,
    diagnostics_qos,
    image_input_qos,
    matching_reliability,
    output_qos,
    sensor_input_qos,
)

#: Seconds between checks of the image topics' publishers (``image_reliability: auto``).
IMAGE_QOS_RECHECK_S = 1.0

#: Makes a publisher: (message type, topic, QoS) -> publisher (``create_publisher`` or ``create_lifecycle_publisher``).
PublisherFactory = Callable[[type, str, Any], Any]
#: Removes a publisher made by the factory.
PublisherRemover = Callable[[Any], Any]


class DepthEndpoints:
    """Subscriptions and publishers of a :class:`DepthPipeline` on ``node`` (see the module notes)."""

    def __init__(
        self,
        node: Node,
        pipeline: DepthPipeline,
        settings: DepthNodeSettings,
        create_publisher: PublisherFactory,
        destroy_publisher: PublisherRemover,
    ) -> None:
        self._node = node
        self._pipeline = pipeline
        self._settings = settings  # the read-only parameters fix the topics for the life of the node
        self._create_publisher = create_publisher
        self._destroy_publisher = destroy_publisher
        self._output_publishers: dict[str, dict[str, Any]] = {}  # camera -> output topic -> publisher
        self._diagnostics_publisher: Any = None
        self._subscriptions: list[Any] = []
        self._image_subscriptions: dict[str, tuple[str, Any]] = {}  # camera -> (reliability, subscription)
        self._reliability_timer: Any = None
        self._message_sizes: dict[str, dict[str, int]] = {}  # camera -> output topic -> bytes of the last message
        self._large_output_warnings: set[tuple[str, str]] = set()  # (topic, subscriber) already warned about
        self.image_topics = {camera.name: self._image_topic(camera) for camera in pipeline.cameras}
        for camera in pipeline.cameras:
            camera.camera_info_topic = node.resolve_topic_name(camera.topics.camera_info)

    def _image_topic(self, camera: CameraChannel) -> str:
        if self._settings.image_transport_for(camera.name) == "compressed":
            return topics.compressed_image_topic(self._node.resolve_topic_name, camera.topics.image)
        return self._node.resolve_topic_name(camera.topics.image)

    # ---- publishers --------------------------------------------------------------------------------
    def create_publishers(self) -> None:
        out_qos = output_qos(self._settings.publisher_reliability)
        for camera in self._pipeline.cameras:
            self._output_publishers[camera.name] = {
                topic.name: self._create_publisher(topic.message_type, camera.topics.name(topic.name), out_qos)
                for topic in OUTPUT_TOPICS
            }
        self._diagnostics_publisher = self._create_publisher(DiagnosticArray, topics.DIAGNOSTICS, diagnostics_qos())

    def destroy_publishers(self) -> None:
        for publishers in self._output_publishers.values():
            for publisher in publishers.values():
                self._destroy_publisher(publisher)
        self._output_publishers.clear()
        if self._diagnostics_publisher is not None:
            self._destroy_publisher(self._diagnostics_publisher)
            self._diagnostics_publisher = None

    def publish(self, camera: CameraChannel, outputs: DepthOutputs) -> bool:
        """Publish one camera's outputs in OUTPUT_TOPICS order; False when the node is going away."""
        publishers = self._output_publishers.get(camera.name)
        if publishers is None or not self._node.context.ok():
            return False
        sizes = self._message_sizes.setdefault(camera.name, {})
        for topic, message in outputs.messages():
            publishers[topic.name].publish(message)
            data = getattr(message, "data", None)
            if data is not None:
                sizes[topic.name] = len(data)
        return True

    def publish_diagnostics(self) -> None:
        self._warn_best_effort_readers_of_large_outputs()
        if self._diagnostics_publisher is not None:
            self._diagnostics_publisher.publish(
                self._pipeline.diagnostics(self._node.get_fully_qualified_name(), self._node.get_clock().now().to_msg())
            )

    def _warn_best_effort_readers_of_large_outputs(self) -> None:
        """Once per output topic and subscriber: a best-effort reader of messages too large to travel
        in one piece (``outputs.options.ONE_PIECE_BYTES``) gets few of them; say so, with the ways out."""
        for camera in self._pipeline.cameras:
            for topic_name, size in list(self._message_sizes.get(camera.name, {}).items()):  # the worker adds
                if size <= ONE_PIECE_BYTES:
                    continue
                topic = self._node.resolve_topic_name(camera.topics.name(topic_name))
                readers = [(info.node_name, info.qos_profile.reliability)
                           for info in self._node.get_subscriptions_info_by_topic(topic)]
                for reader in best_effort_readers(readers):
                    if (topic, reader) in self._large_output_warnings:
                        continue
                    self._large_output_warnings.add((topic, reader))
                    self._node.get_logger().warning(
                        f"{topic}: {reader} subscribes best effort, and these {size / 1e6:.1f} MB messages travel "
                        f"in fragments (over {ONE_PIECE_BYTES // 1024} KB), so it gets few of them (measured: 0 of "
                        "99 clouds of 4.9 MB, 2 of 100 depth images of 1.2 MB). Make them smaller (points_stride 0, "
                        "the default, keeps clouds within that; output_width/output_height for the depth image) or "
                        "subscribe reliable")

    # ---- subscriptions -----------------------------------------------------------------------------
    def create_subscriptions(self) -> None:
        in_qos = sensor_input_qos(self._settings.qos_depth)
        for camera in self._pipeline.cameras:
            # CameraInfo first: rclpy's executor serves the ready subscriptions of a node in the order
            # they were made, so an image that arrives with its CameraInfo finds that CameraInfo.
            self._subscriptions += [
                self._node.create_subscription(
                    CameraInfo, camera.topics.camera_info,
                    lambda message, camera=camera: self._pipeline.on_camera_info(camera, message),
                    in_qos,
                ),
                self._node.create_subscription(
                    PointCloud2, camera.topics.anchor_points,
                    lambda message, camera=camera: self._pipeline.on_anchor_points(camera, message),
                    in_qos,
                ),
            ]
            self._subscribe_image(camera, self._image_reliability(camera))
        if self._settings.image_reliability == "auto":
            self._reliability_timer = self._node.create_timer(IMAGE_QOS_RECHECK_S, self._match_image_publishers)

    def _image_reliability(self, camera: CameraChannel) -> str:
        """The image subscription's reliability now: the parameter, or for ``auto`` what the topic's
        publishers offer (``qos.matching_reliability``)."""
        if self._settings.image_reliability != "auto":
            return self._settings.image_reliability
        publishers = self._node.get_publishers_info_by_topic(self.image_topics[camera.name])
        return matching_reliability(info.qos_profile.reliability for info in publishers)

    def _subscribe_image(self, camera: CameraChannel, reliability: str) -> None:
        compressed = self._settings.image_transport_for(camera.name) == "compressed"
        self._image_subscriptions[camera.name] = (reliability, self._node.create_subscription(
            CompressedImage if compressed else Image,
            self.image_topics[camera.name] if compressed else camera.topics.image,
            lambda message, camera=camera: self._pipeline.on_image(camera, message),
            image_input_qos(reliability, self._settings.qos_depth),
        ))

    def _match_image_publishers(self) -> None:
        """``image_reliability: auto``: subscribe again when the publishers now call for the other
        reliability (a camera driver started after the node, or replaced by one with other QoS)."""
        for camera in self._pipeline.cameras:
            current, subscription = self._image_subscriptions[camera.name]
            wanted = self._image_reliability(camera)
            if wanted == current:
                continue
            self._node.destroy_subscription(subscription)
            self._subscribe_image(camera, wanted)
            self._node.get_logger().info(
                f"{camera.log_prefix}image {self.image_topics[camera.name]}: its publishers offer "
                f"{'reliable' if wanted == 'reliable' else 'best effort'}: subscribed {wanted} "
                f"(image_reliability auto; was {current})")

    def destroy_subscriptions(self) -> None:
        if self._reliability_timer is not None:
            self._node.destroy_timer(self._reliability_timer)
            self._reliability_timer = None
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions.clear()
        for _, subscription in self._image_subscriptions.values():
            self._node.destroy_subscription(subscription)
        self._image_subscriptions.clear()

    # ---- what the log says at start-up -----------------------------------------------------------
    def describe(self) -> str:
        """Each camera's input and output topics, and what is on."""
        resolve = self._node.resolve_topic_name
        outputs = self._settings.outputs
        lines = []
        for camera in self._pipeline.cameras:
            transport = self._settings.image_transport_for(camera.name)
            encoding = self._settings.outputs_for(camera.name).depth_encoding
            subscribed = self._image_subscriptions.get(camera.name)
            if self._settings.image_reliability != "auto":
                qos = self._settings.image_reliability
            elif subscribed is None:
                qos = "reliability matched to its publishers"
            else:
                qos = f"{subscribed[0]} as its publishers offer"
            source = f"{self.image_topics[camera.name]} ({transport}, {qos}) + {camera.camera_info_topic}"
            lines.append(
                f"{camera.log_prefix}Input: {source}. "
                f"Output: {resolve(camera.topics.name(DEPTH_IMAGE))} ({encoding}), "
                f"{resolve(camera.topics.name(DEPTH_CAMERA_INFO))}, {resolve(camera.topics.name(POINTS))} "
                f"({'on' if outputs.publish_points else 'off'})"
            )
        quality = [name for name, on in (
            ("confidence", outputs.publish_confidence), (f"out_of_range {outputs.out_of_range}", True),
            (f"flying_pixel_threshold {outputs.flying_pixel_threshold:g}", outputs.flying_pixel_threshold > 0),
            (f"points_min_confidence {outputs.points_min_confidence:g}", outputs.points_min_confidence > 0),
            (f"scale_anchor {outputs.scale_anchor}", outputs.scale_anchor != "none"),
        ) if on]
        return (
            "; ".join(lines) + f"; colored {'on' if outputs.publish_colored else 'off'}, "
            f"embedding {'on' if outputs.publish_embedding else 'off'}, {', '.join(quality)}; "
            f"publishers {self._settings.publisher_reliability}; "
            f"undistort {'on' if self._settings.undistort else 'off'}"
        )
