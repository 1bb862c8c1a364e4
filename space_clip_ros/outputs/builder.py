"""A depth map in, the output messages out: the node's output step, shared with the bag tool.

For one depth map (a NumPy array, or a torch tensor on any device) and the
:class:`~space_clip_ros.outputs.options.OutputOptions`, in this order:

1. the calibration is scaled once to the depth map's size (depth/camera_info and the cloud's
   intrinsics both come from it) and the focal rescaling factor is found (when on);
2. with ``scale_anchor``, the metric scale is fitted on the rescaled depth and applied on top
   (:class:`~space_clip_ros.outputs.anchoring.DepthScaleAnchor`, one per camera);
3. with ``flying_pixel_threshold``, the flying pixels are found on the rescaled depth before the
   range is applied (:func:`~space_clip_ros.outputs.flying_pixels.flying_pixel_mask`), so a ramp
   running out of the range is still caught at its in-range end;
4. the depth is rescaled and masked to [min_depth, max_depth] once, where it is (``msgs.valid_depth_mask``:
   the one validity rule), so that the depth image, the cloud and the colour picture all show
   the same valid pixels and each cloud point is the back-projection of its depth pixel; the
   depth image holds NaN outside the range, or REP 117's +-Inf with ``out_of_range: rep117``
   (:func:`~space_clip_ros.outputs.ranges.apply_out_of_range`);
5. the cloud leaves out flying pixels and pixels below ``points_min_confidence`` (the depth image
   keeps them unless ``flying_pixels_invalid``);
6. the messages are built, all with the image's stamp and the output frame id. A depth map still
   on a GPU gets its organised xyz cloud back-projected there
   (:mod:`space_clip_ros.outputs.device_cloud`, one copy of the finished cloud to the host; not
   with the flying-pixel filter, whose neighbourhood test runs in OpenCV); every other cloud is
   built by NumPy (:mod:`space_clip_ros.outputs.cloud`).

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
from space_clip_ros.msgs.image import (
    colorize_depth,
    depth_to_image_msg,
    float_image_msg,
    rgb_to_image_msg,
    valid_depth_mask,
)
from space_clip_ros.outputs.anchoring import AnchorFit, DepthScaleAnchor
from space_clip_ros.outputs.calibration import CameraCalibration
from space_clip_ros.outputs.cloud import PointCloudBuilder
from space_clip_ros.outputs.device_cloud import DevicePointCloudBuilder
from space_clip_ros.outputs.flying_pixels import flying_pixel_mask
from space_clip_ros.outputs.messages import embedding_message, output_header, stamped_embedding_message
from space_clip_ros.outputs.options import OutputOptions
from space_clip_ros.outputs.ranges import apply_out_of_range
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
    confidence: Image | None = None  # depth/confidence: 32FC1 in (0, 1], the depth image's size
    embedding_stamped: Image | None = None  # the embedding as a 1 x D 32FC1 Image with the image's header
    anchor: AnchorFit | None = None  # the metric scale anchor's fit (scale_anchor not none)
    flying_pixels: int = 0  # pixels the flying-pixel filter found (left out of the cloud)
    low_confidence_pixels: int = 0  # pixels left out of the cloud for confidence < points_min_confidence

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


def _host(values: Any) -> np.ndarray:
    """A float32 NumPy array of a NumPy array or a torch tensor on any device."""
    if isinstance(values, torch.Tensor):
        return values.float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


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
        self._anchor = DepthScaleAnchor()  # for callers with one camera that pass none of their own

    def _builds_cloud_on_device(self, depth: Any, options: OutputOptions, rgb: np.ndarray | None) -> bool:
        if not isinstance(depth, torch.Tensor):
            return False
        on_device = depth.device.type != "cpu" if self._cloud_on_device is None else self._cloud_on_device
        # The device builder writes the node's default layout only: organised, full resolution, xyz;
        # the flying-pixel test runs in OpenCV, on the host.
        with_colours = options.points_rgb and rgb is not None
        stride = options.cloud_stride(*depth.shape[-2:], with_rgb=with_colours)
        return (on_device and options.points_organized and stride == 1 and not with_colours
                and options.flying_pixel_threshold == 0.0)

    def build(
        self,
        depth: Any,
        source_header: Header,
        calibration: CameraCalibration | None,
        options: OutputOptions,
        rgb: np.ndarray | None = None,
        embedding: Any = None,
        clock: StageClock | None = None,
        confidence: Any = None,
        anchor: DepthScaleAnchor | None = None,
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
            embedding: the frame's (D,) CLIP image embedding as a NumPy array; its messages are
                built with ``options.publish_embedding``.
            clock: charges the work to the stages ``scale_anchor``, ``filters``, ``pointcloud``,
                ``depth_msg``, ``confidence_msg`` and ``colored``.
            confidence: the frame's (H, W) confidence map (``Prediction.confidence``, NumPy or
                torch), needed when ``options.wants_confidence``.
            anchor: the camera's scale anchor state (``options.scale_anchor``); None: this
                builder's own (one camera).

        Raises PointCloudError (a ValueError) when the cloud cannot be built, and ValueError when
        the options need a confidence map that was not given.
        """
        clock = clock or StageClock()
        out_height, out_width = depth.shape
        header = output_header(source_header, options.frame_id)
        image_size = None if rgb is None else (rgb.shape[1], rgb.shape[0])
        if options.wants_confidence and confidence is None:
            raise ValueError("publish_confidence / points_min_confidence need the frame's confidence map")

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

        # 2. the metric scale anchor, fitted on the focal-rescaled depth and applied on top.
        anchor_fit = None
        total_scale = depth_scale
        if options.scale_anchor != "none":
            anchor = anchor or self._anchor
            rescaled = _host(depth) * np.float32(depth_scale)
            anchor_fit = anchor.fit(rescaled, None if depth_camera is None else depth_camera.intrinsics, options)
            total_scale = depth_scale * anchor_fit.scale
            clock.stamp("scale_anchor")

        # 3. the depth, rescaled and masked to the range once, where it is; what the filters need
        #    of the rescaled depth before the range (on the host).
        on_device = wants_points and self._builds_cloud_on_device(depth, options, rgb)
        if not on_device and isinstance(depth, torch.Tensor):
            depth = depth.float().cpu().numpy()
        rep117 = options.out_of_range == "rep117"
        flying_on = options.flying_pixel_threshold > 0.0
        unmasked = None
        if rep117 or flying_on:
            unmasked = _host(depth) * np.float32(total_scale)
        depth = _range_masked(depth, total_scale, options)
        flying = None
        if flying_on and (wants_points or options.flying_pixels_invalid):
            flying = flying_pixel_mask(unmasked, options.flying_pixel_threshold)
        low_confidence = None  # NumPy, or torch on the depth's device for the device cloud
        if wants_points and options.points_min_confidence > 0.0:
            if on_device:
                low_confidence = torch.as_tensor(confidence, device=depth.device) < options.points_min_confidence
            else:
                low_confidence = _host(confidence) < np.float32(options.points_min_confidence)
        if flying is not None or low_confidence is not None:
            clock.stamp("filters")

        # 4. the messages.
        points = None
        if on_device:
            cloud_depth = depth
            if low_confidence is not None:
                cloud_depth = torch.where(low_confidence, torch.full_like(depth, float("nan")), depth)
            camera = depth_camera.intrinsics
            points = self._device_clouds.build(cloud_depth, camera, header, max_range=options.cloud_max_range)
            clock.stamp("pointcloud")
            depth = depth.cpu().numpy()
            if low_confidence is not None:
                low_confidence = low_confidence.cpu().numpy()

        image_depth = depth
        if rep117:
            image_depth = apply_out_of_range(unmasked, options.min_depth, options.max_depth, "rep117")
        if flying is not None and options.flying_pixels_invalid:
            image_depth = image_depth.copy() if image_depth is depth else image_depth
            image_depth[flying] = np.float32(np.nan)
        depth_image = depth_to_image_msg(image_depth, header, options.depth_encoding, keep_infinities=rep117)
        clock.stamp("depth_msg")

        if wants_points and points is None:
            colours = None
            if options.points_rgb and rgb is not None:
                colours = rgb if rgb.shape[:2] == depth.shape else cv2.resize(
                    rgb, (out_width, out_height), interpolation=cv2.INTER_AREA
                )
            cloud_depth = depth
            left_out = flying if low_confidence is None else (
                low_confidence if flying is None else flying | low_confidence
            )
            if left_out is not None and left_out.any():
                cloud_depth = np.where(left_out, np.float32(np.nan), depth)
            points = self._clouds.build(
                cloud_depth,
                depth_camera.intrinsics,
                header,
                organized=options.points_organized,
                stride=options.cloud_stride(out_height, out_width, with_rgb=colours is not None),
                max_range=options.cloud_max_range,
                rgb=colours,
            )
            clock.stamp("pointcloud")

        confidence_msg = None
        if options.publish_confidence:
            confidence_msg = float_image_msg(_host(confidence), header)
            clock.stamp("confidence_msg")

        colored = None
        if options.colored_colormap is not None:
            bgr = colorize_depth(image_depth, options.min_depth, options.max_depth, options.colored_colormap)
            # rgb_to_image_msg takes RGB and writes bgr8 itself.
            colored = rgb_to_image_msg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), header, encoding="bgr8")
            clock.stamp("colored")

        embedding_msg = embedding_stamped = None
        if options.publish_embedding and embedding is not None:
            embedding_msg = embedding_message(embedding)
            embedding_stamped = stamped_embedding_message(embedding, header)

        return DepthOutputs(
            depth_image=depth_image,
            depth_camera_info=None if depth_camera is None else depth_camera.info,
            points=points,
            colored=colored,
            embedding=embedding_msg,
            depth_scale=depth_scale,
            image_size=image_size,
            camera_info_size_mismatch=size_mismatch,
            confidence=confidence_msg,
            embedding_stamped=embedding_stamped,
            anchor=anchor_fit,
            flying_pixels=0 if flying is None else int(np.count_nonzero(flying)),
            low_confidence_pixels=0 if low_confidence is None else int(np.count_nonzero(low_confidence)),
        )
