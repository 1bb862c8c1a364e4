"""The camera simulator node ``camera_simulator``: a camera driver without a camera.

Publishes ``image_raw`` (sensor_msgs/Image, rgb8 or bgr8; or ``image_raw/compressed`` as JPEG/PNG)
and ``camera_info`` at a set rate, as a real driver does: both messages of a frame carry the same
stamp (the time of capture) and the optical frame id, and the CameraInfo's K is the intrinsics of
the published pixels. Frames come from :mod:`space_clip_ros.data.frame_sources` (a synthetic scene
the camera moves through, a folder of images with an intrinsics file, or a video file); the
messages are built by ``msgs``. Start it in the camera's namespace, e.g.::

    camera_simulator --ros-args -r __ns:=/camera/color -p source:=synthetic -p rate:=10.0

which gives /camera/color/image_raw and /camera/color/camera_info, the depth launch file's defaults.
With ``max_frames`` > 0, or a source that does not loop, the node exits after the last frame.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from space_clip_ros.data.camera import CameraModel
from space_clip_ros.data.frame_sources import (
    SCENE_KINDS,
    SOURCE_KINDS,
    FrameSourceConfig,
    FrameSourceError,
    SourceFrame,
    open_frame_source,
)
from space_clip_ros.msgs import (
    COMPRESSED_FORMATS,
    camera_info_from_intrinsics,
    depth_to_image_msg,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)
from space_clip_ros.ros.node_main import run_node
from space_clip_ros.ros.parameter_table import (
    IMAGE_TRANSPORTS,
    RELIABILITIES,
    ParameterSpec,
    ParameterValue,
    declare_parameters,
)
from space_clip_ros.ros.qos import output_qos

NODE_NAME = "camera_simulator"
IMAGE_TOPIC = "image_raw"
COMPRESSED_IMAGE_TOPIC = "image_raw/compressed"
CAMERA_INFO_TOPIC = "camera_info"
GROUND_TRUTH_TOPIC = "ground_truth/depth"
OUTPUT_ENCODINGS = ("rgb8", "bgr8")

EXIT_SOURCE_ERROR = 2  # exit code of main() for a bad parameter or source (0: stopped normally)


def _parameter(name: str, default: ParameterValue, description: str, **limits: Any) -> ParameterSpec:
    """A simulator parameter: every one is fixed at start-up."""
    return ParameterSpec(name, default, description, read_only=True, **limits)


#: Every parameter of the simulator (docs/demo_and_bags.md carries their table).
PARAMETERS: tuple[ParameterSpec, ...] = (
    _parameter("source", "synthetic", "Where frames come from: synthetic (a generated scene the camera "
               "moves through), folder (images + intrinsics file) or video (a video file).",
               choices=SOURCE_KINDS),
    _parameter("rate", 10.0, "Frames per second to publish.", min_value=0.1, max_value=1000.0),
    _parameter("width", 0, "Image width in pixels; 0 (with height 0): the source's size "
               "(synthetic: 640x480 indoor, 832x256 street).", min_value=0, max_value=8192),
    _parameter("height", 0, "Image height in pixels; 0 (with width 0): the source's size.",
               min_value=0, max_value=8192),
    _parameter("scene", "indoor", "Synthetic scene kind: indoor (a furnished room, NYU-like camera) or "
               "street (a road with buildings and cars, KITTI-like camera).", choices=SCENE_KINDS),
    _parameter("seed", 0, "Synthetic scene seed (same seed, same scene).", min_value=0, max_value=2**31 - 1),
    _parameter("frames_per_pass", 100, "Synthetic: frames for one pass of the camera along the scene's "
               "path (more frames, slower motion).", min_value=1, max_value=100000),
    _parameter("loop", True, "Start again after the last frame (synthetic: go back along the path); "
               "false: exit after the last frame."),
    _parameter("max_frames", 0, "Exit after publishing this many frames; 0: no limit.",
               min_value=0, max_value=2**31 - 1),
    _parameter("frame_id", "camera_color_optical_frame", "header.frame_id of image and camera_info "
               "(the camera's optical frame: z forward, x right, y down)."),
    _parameter("folder", "", "Source folder: the images (or its rgb/ sub-folder), in name order."),
    _parameter("image_pattern", "*", "Folder: glob pattern of the image file names, e.g. color_*.png."),
    _parameter("intrinsics_file", "", "YAML/JSON intrinsics (fx, fy, cx, cy, width, height, or the ROS "
               "camera_calibration format). Empty: <folder>/intrinsics.yaml for folder; a field of view "
               "guess (fov_deg) for video."),
    _parameter("video_path", "", "Source video: a video file OpenCV can read."),
    _parameter("fov_deg", 60.0, "Video without intrinsics file: horizontal field of view assumed.",
               min_value=1.0, max_value=179.0),
    _parameter("encoding", "rgb8", "Raw image encoding.", choices=OUTPUT_ENCODINGS),
    _parameter("image_transport", "raw", "raw: sensor_msgs/Image on image_raw; compressed: "
               "sensor_msgs/CompressedImage on image_raw/compressed.", choices=IMAGE_TRANSPORTS),
    _parameter("compressed_format", "jpeg", "Compression of image_raw/compressed.", choices=COMPRESSED_FORMATS),
    _parameter("reliability", "reliable", "QoS reliability of the publishers (keep last 5, volatile).",
               choices=RELIABILITIES),
    _parameter("publish_ground_truth", False, "Synthetic: also publish the exact depth (32FC1 metres, "
               "NaN where none) on ground_truth/depth, stamped like the image."),
)


@dataclass(frozen=True)
class SimulatorSettings:
    """The simulator's parameter values, typed."""

    source: FrameSourceConfig
    rate: float
    max_frames: int
    frame_id: str
    encoding: str
    image_transport: str
    compressed_format: str
    reliability: str
    publish_ground_truth: bool

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> SimulatorSettings:
        """Settings from a value of every parameter; raises FrameSourceError for an invalid one."""
        for spec in PARAMETERS:
            reason = spec.check(values[spec.name])
            if reason is not None:
                raise FrameSourceError(reason)
        source = FrameSourceConfig(
            source=values["source"], width=values["width"], height=values["height"], loop=values["loop"],
            scene=values["scene"], seed=values["seed"], frames_per_pass=values["frames_per_pass"],
            folder=values["folder"], image_pattern=values["image_pattern"],
            intrinsics_file=values["intrinsics_file"], video_path=values["video_path"],
            fov_deg=float(values["fov_deg"]),
        )
        return cls(
            source=source, rate=float(values["rate"]), max_frames=values["max_frames"], frame_id=values["frame_id"],
            encoding=values["encoding"], image_transport=values["image_transport"],
            compressed_format=values["compressed_format"], reliability=values["reliability"],
            publish_ground_truth=values["publish_ground_truth"],
        )


@dataclass(frozen=True)
class CameraMessages:
    image: Image | CompressedImage
    camera_info: CameraInfo
    ground_truth: Image | None = None


def camera_messages(
    frame: SourceFrame, camera: CameraModel, header: Header, settings: SimulatorSettings
) -> CameraMessages:
    """The messages a camera driver publishes for one frame, all with ``header`` (no rclpy here)."""
    if settings.image_transport == "compressed":
        image = rgb_to_compressed_msg(frame.rgb, header, settings.compressed_format)
    else:
        image = rgb_to_image_msg(frame.rgb, header, settings.encoding)
    info = camera_info_from_intrinsics(camera.intrinsics, header, camera.distortion_model)
    if camera.distortion:
        info.d = list(camera.distortion)
    ground_truth = None
    if settings.publish_ground_truth and frame.depth is not None:
        ground_truth = depth_to_image_msg(frame.depth, header)
    return CameraMessages(image, info, ground_truth)


class CameraSimulator(Node):
    """Publishes the frames of a frame source as a camera driver would (see the module notes)."""

    def __init__(self, **node_options) -> None:
        super().__init__(NODE_NAME, **node_options)
        self._settings = SimulatorSettings.from_values(declare_parameters(self, PARAMETERS))
        self._source = open_frame_source(self._settings.source)
        self._frames = iter(self._source)
        self.published = 0
        #: Done when the last frame went out (max_frames reached or a non-looping source ended).
        self.finished = Future()

        qos = output_qos(self._settings.reliability)  # keep last 5, volatile: as the depth node's outputs
        if self._settings.image_transport == "compressed":
            self._image_pub = self.create_publisher(CompressedImage, COMPRESSED_IMAGE_TOPIC, qos)
        else:
            self._image_pub = self.create_publisher(Image, IMAGE_TOPIC, qos)
        self._info_pub = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, qos)
        self._truth_pub = (
            self.create_publisher(Image, GROUND_TRUTH_TOPIC, qos) if self._settings.publish_ground_truth else None
        )
        self._timer = self.create_timer(1.0 / self._settings.rate, self._publish_next)
        settings, camera = self._settings, self._source.camera.intrinsics
        pixels = settings.encoding if settings.image_transport == "raw" else settings.compressed_format
        self.get_logger().info(
            f"{self._source.describe()}: publishing {self._image_pub.topic_name} ({pixels}) and "
            f"{self._info_pub.topic_name} at {settings.rate:g} Hz, frame '{settings.frame_id}', "
            f"fx {camera.fx:.1f} fy {camera.fy:.1f} cx {camera.cx:.1f} cy {camera.cy:.1f}"
        )

    def _publish_next(self) -> None:
        if self.finished.done():
            return
        frame = next(self._frames, None)
        if frame is None:
            self._finish("the source has no more frames")
            return
        # One stamp for both messages: the capture time, as a driver stamps them.
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._settings.frame_id)
        messages = camera_messages(frame, self._source.camera, header, self._settings)
        try:
            self._image_pub.publish(messages.image)
            self._info_pub.publish(messages.camera_info)
            if self._truth_pub is not None and messages.ground_truth is not None:
                self._truth_pub.publish(messages.ground_truth)
        except Exception:  # noqa: BLE001 - rcl refuses to publish once SIGINT has shut the context down
            if self.context.ok():
                raise
            return  # shutting down while this frame was rendered: a clean stop, not an error
        self.published += 1
        if 0 < self._settings.max_frames <= self.published:
            self._finish(f"max_frames={self._settings.max_frames} reached")

    def _finish(self, reason: str) -> None:
        self._timer.cancel()
        self.get_logger().info(f"published {self.published} frame(s); stopping: {reason}")
        self.finished.set_result(self.published)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run space_clip_ros camera_simulator`` (rclpy reads ``--ros-args``)."""
    return run_node(
        NODE_NAME,
        args,
        CameraSimulator,
        startup_errors=[((FrameSourceError, rclpy.exceptions.ParameterException), "refusing to start",
                         EXIT_SOURCE_ERROR)],
        command_line_exit_code=EXIT_SOURCE_ERROR,
        until=lambda node: node.finished,
        on_interrupt=lambda node: node.get_logger().info(
            f"published {node.published} frame(s); stopping: interrupted"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
