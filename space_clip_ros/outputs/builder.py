"""A depth map in, the output messages out: the node's output step, shared with the bag tool.

For one depth map (a NumPy array, or a torch tensor on any device) and the
:class:`~space_clip_ros.outputs.options.OutputOptions`, in this order:

1. the calibration is scaled once to the depth map's size (depth/camera_info and the cloud's
   intrinsics both come from it) and the focal rescaling factor is found (when on);
2. the depth is rescaled and masked to [min_depth, max_depth] once, where it is (``msgs.valid_depth_mask``:
   the one validity rule), so that the depth image, the cloud and the colour picture all show
   the same valid pixels and each cloud point is the back-projection of its depth pixel;
3. the messages are built, all with the image's stamp and the output frame id. A depth map still
   on a GPU gets its organised xyz cloud back-projected there
   (:mod:`space_clip_ros.outputs.device_cloud`, one copy of the finished cloud to the host); every
   other cloud is built by NumPy (:mod:`space_clip_ros.outputs.cloud`).

No rclpy here, and nothing the bag tool would not need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float32MultiArray, Header

from space_clip_ros.data.camera import focal_rescale_factor
from space_clip_ros.inference.benchmarking.timing import StageClock
from space_clip_ros.msgs.image import colorize_depth, depth_to_image_msg, rgb_to_image_msg, valid_depth_mask
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.cloud import PointCloudBuilder
from space_clip_ros.outputs.device_cloud import DevicePointCloudBuilder
from space_clip_ros.outputs.messages import embedding_message, output_header
from space_clip_ros.outputs.options import OutputOptions
from space_clip_ros.outputs.topics import OUTPUT_TOPICS, OutputTopic

if TYPE_CHECKING:
    from space_clip_ros.model import CheckpointRecord


@dataclass(frozen=True)
class DepthOutputs:
    """The messages built from one depth map (None where an output is off or cannot be made yet),
    and what the node reports about the frame."""

    depth_image: Image
    depth_camera_info: CameraInfo | None
    points: PointCloud2 | None
    colored: Image | None
    embedding: Float32MultiArray | None
    depth_scale: float  # the focal rescaling factor applied to the depth (1.0: none)
    image_size: tuple[int, int] | None  # (width, height) of the source image, when its pixels were given
    # (width, height) the CameraInfo described when that differed from the image (it was rescaled).
    camera_info_size_mismatch: tuple[int, int] | None
    inference_s: float = 0.0  # the predictor's time for the frame (set by DepthFrameProcessor)

    def messages(self) -> list[tuple[OutputTopic, Any]]:
        """(topic, message) of every output that was built, in :data:`OUTPUT_TOPICS` order."""
        built = ((topic, getattr(self, topic.field)) for topic in OUTPUT_TOPICS)
        return [(topic, message) for topic, message in built if message is not None]


def _range_masked(depth: Any, depth_scale: float, options: OutputOptions) -> Any:
    """``depth`` (NumPy or torch) times ``depth_scale``, NaN outside [min_depth, max_depth]; a new array."""
    if isinstance(depth, torch.Tensor):
        depth = depth.float()
        depth = depth * depth_scale if depth_scale != 1.0 else depth
        valid = valid_depth_mask(depth, options.min_depth, options.max_depth)
        return torch.where(valid, depth, torch.full_like(depth, float("nan")))
    if depth_scale != 1.0:
        depth = depth * np.float32(depth_scale)  # not in place: the engine may own that buffer
    return np.where(valid_depth_mask(depth, options.min_depth, options.max_depth), depth, np.float32(np.nan))


class DepthOutputBuilder:
    """Builds the output messages of depth maps (the node's and the bag tool's); keeps the cloud ray caches.

    Args:
        record: the checkpoint's training record (for focal rescaling); None: no rescaling.
        cloud_on_device: build organised xyz clouds of torch depth maps with torch on the map's
            device. None (default): for maps on a GPU only. Same bytes either way (tested).
    """

    def __init__(self, record: CheckpointRecord | None, cloud_on_device: bool | None = None) -> None:
        self._record = record
        self._cloud_on_device = cloud_on_device
        self._clouds = PointCloudBuilder()
        self._device_clouds = DevicePointCloudBuilder()

    def _builds_cloud_on_device(self, depth: Any, options: OutputOptions, rgb: np.ndarray | None) -> bool:
        if not isinstance(depth, torch.Tensor):
            return False
        on_device = depth.device.type != "cpu" if self._cloud_on_device is None else self._cloud_on_device
        # The device builder writes the node's default layout only: organised, full resolution, xyz.
        with_colours = options.points_rgb and rgb is not None
        return on_device and options.points_organized and options.points_stride == 1 and not with_colours

    def build(
        self,
        depth: Any,
        source_header: Header,
        calibration: CameraCalibration | None,
        options: OutputOptions,
        rgb: np.ndarray | None = None,
        embedding: Any = None,
        clock: StageClock | None = None,
    ) -> DepthOutputs:
        """The outputs of one depth map.

        Args:
            depth: (H, W) metric depth at the output size, a float32 NumPy array or a torch tensor
                (on any device). Not modified.
            source_header: header of the image the depth was predicted from (stamp, frame id).
            calibration: the image's CameraInfo; None: depth image only, no focal rescaling.
            options: what to build.
            rgb: the image's (H', W', 3) RGB pixels, for the cloud's colours (resized to the depth
                map when the sizes differ; only read with ``options.points_rgb``) and the image size.
            embedding: the frame's (D,) CLIP image embedding as a NumPy array; its message is built
                with ``options.publish_embedding``.
            clock: charges the work to the stages ``pointcloud``, ``depth_msg`` and ``colored``.

        Raises PointCloudError (a ValueError) when the cloud cannot be built.
        """
        clock = clock or StageClock()
        out_height, out_width = depth.shape
        header = output_header(source_header, options.frame_id)
        image_size = None if rgb is None else (rgb.shape[1], rgb.shape[0])

        # 1. geometry: the calibration scaled once to the depth map, and the focal rescaling factor.
        depth_scale = 1.0
        depth_camera = None
        size_mismatch = None
        if calibration is not None:
            camera = calibration.intrinsics
            if image_size is not None and camera.size != image_size:
                size_mismatch = camera.size
            if options.focal_rescale:
                # The factor compares focal lengths relative to image size, so the CameraInfo's
                # own size serves whatever size the image arrived at.
                depth_scale = focal_rescale_factor(camera.fx, camera.fy, (camera.height, camera.width), self._record)
            # From the CameraInfo's image straight to the depth map's size (a pure scaling, so the
            # same as rescaling to the image first).
            depth_camera = calibration.scaled_to(out_width, out_height)
            depth_camera.info.header = header
        wants_points = options.publish_points and depth_camera is not None

        # 2. the depth, rescaled and masked to the range once, where it is.
        on_device = wants_points and self._builds_cloud_on_device(depth, options, rgb)
        if not on_device and isinstance(depth, torch.Tensor):
            depth = depth.float().cpu().numpy()
        depth = _range_masked(depth, depth_scale, options)

        # 3. the messages.
        points = None
        if on_device:
            camera = depth_camera.intrinsics
            points = self._device_clouds.build(depth, camera, header, max_range=options.cloud_max_range)
            clock.stamp("pointcloud")
            depth = depth.cpu().numpy()
        depth_image = depth_to_image_msg(depth, header, options.depth_encoding)
        clock.stamp("depth_msg")

        if wants_points and points is None:
            colours = None
            if options.points_rgb and rgb is not None:
                colours = rgb if rgb.shape[:2] == depth.shape else cv2.resize(
                    rgb, (out_width, out_height), interpolation=cv2.INTER_AREA
                )
            points = self._clouds.build(
                depth,
                depth_camera.intrinsics,
                header,
                organized=options.points_organized,
                stride=options.points_stride,
                max_range=options.cloud_max_range,
                rgb=colours,
            )
            clock.stamp("pointcloud")

        colored = None
        if options.colored_colormap is not None:
            bgr = colorize_depth(depth, options.min_depth, options.max_depth, options.colored_colormap)
            # rgb_to_image_msg takes RGB and writes bgr8 itself.
            colored = rgb_to_image_msg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), header, encoding="bgr8")
            clock.stamp("colored")

        embedding_msg = None
        if options.publish_embedding and embedding is not None:
            embedding_msg = embedding_message(embedding)

        return DepthOutputs(
            depth_image=depth_image,
            depth_camera_info=None if depth_camera is None else depth_camera.info,
            points=points,
            colored=colored,
            embedding=embedding_msg,
            depth_scale=depth_scale,
            image_size=image_size,
            camera_info_size_mismatch=size_mismatch,
        )
