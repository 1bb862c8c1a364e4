"""One camera frame in, the depth node's output messages out (no rclpy: callable from tests and tools).

Conversions and geometry are the ``msgs`` package's; inference is the predictor's. This module only
decides which of them run for a frame, in which order, and at which size. Two steps:

* inference (:meth:`DepthFrameProcessor.process`): decode the image message to RGB (raw or
  compressed), then one encoder + decoder pass at the output size (with the CLIP embedding when
  asked for);
* output building (:meth:`DepthOutputBuilder.build`, shared with the bag tool, which runs the
  predictor on batches itself): rescale depth by focal length (when on, and a CameraInfo is
  known); apply [min_depth, max_depth], so that the depth image, the cloud and the colour picture
  all show the same valid pixels and each cloud point is the back-projection of its depth pixel;
  build the messages, all with the image's stamp and the output frame id. A depth map still on a
  GPU gets its organised xyz cloud back-projected there (one copy of the finished cloud to the
  host, :mod:`space_clip_ros.inference.device_pointcloud`); every other cloud is built by NumPy.

The benchmark (``space-clip-benchmark``, frame section) times these same two steps, stage by stage,
through the optional :class:`~space_clip_ros.inference.benchmarking.timing.StageClock` arguments.
"""

from __future__ import annotations

import array
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32MultiArray, Header, MultiArrayDimension

from space_clip_ros.data.camera import focal_rescale_factor
from space_clip_ros.inference.benchmarking.timing import StageClock, device_synchronizer
from space_clip_ros.inference.device_pointcloud import DevicePointCloudBuilder
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.msgs import (
    CameraIntrinsics,
    PointCloudBuilder,
    colorize_depth,
    compressed_msg_to_rgb,
    depth_to_image_msg,
    image_msg_to_rgb,
    rgb_to_image_msg,
    scale_camera_info,
    valid_depth_mask,
)
from space_clip_ros.ros.parameters import DepthNodeSettings

if TYPE_CHECKING:
    from space_clip_ros.model import CheckpointRecord

#: Label of the single dimension of the embedding message's layout.
EMBEDDING_LABEL = "clip_image_embedding"


@dataclass(frozen=True)
class CameraCalibration:
    """A CameraInfo that passed validation, with the intrinsics of the image it describes."""

    info: CameraInfo
    intrinsics: CameraIntrinsics

    @classmethod
    def from_msg(cls, info: CameraInfo) -> CameraCalibration:
        """Raises CameraInfoError (saying what is wrong) for an unusable CameraInfo."""
        return cls(info=info, intrinsics=CameraIntrinsics.from_camera_info(info))


@dataclass(frozen=True)
class OutputSettings:
    """What :meth:`DepthOutputBuilder.build` makes of a depth map (the node's parameters, or the
    bag tool's options, that concern the outputs).

    Attributes:
        min_depth, max_depth: valid depth range in metres (outside: NaN / 0, and no cloud point).
        depth_encoding: 32FC1 (metres, NaN invalid) or 16UC1 (millimetres, 0 invalid).
        frame_id: frame of every output; empty: the source image's.
        focal_rescale: rescale depth by the camera's focal length relative to the training camera's.
        publish_points: build a point cloud (when a calibration is known).
        points_organized, points_stride, points_rgb: point cloud layout.
        cloud_max_range: farthest z a cloud point may have (metres).
        colormap: OpenCV colour map of the colour-mapped depth picture; None: no picture.
    """

    min_depth: float
    max_depth: float
    depth_encoding: str
    frame_id: str
    focal_rescale: bool
    publish_points: bool
    points_organized: bool
    points_stride: int
    points_rgb: bool
    cloud_max_range: float
    colormap: str | None

    @classmethod
    def from_node_settings(cls, settings: DepthNodeSettings) -> OutputSettings:
        return cls(
            min_depth=settings.min_depth,
            max_depth=settings.max_depth,
            depth_encoding=settings.depth_encoding,
            frame_id=settings.frame_id,
            focal_rescale=settings.focal_rescale,
            publish_points=settings.publish_points,
            points_organized=settings.points_organized,
            points_stride=settings.points_stride,
            points_rgb=settings.points_rgb,
            cloud_max_range=settings.cloud_max_range,
            colormap=settings.colormap if settings.publish_colored else None,
        )


@dataclass(frozen=True)
class DepthOutputs:
    """The messages built from one depth map; None where an output is off or cannot be made yet."""

    depth_image: Image
    depth_camera_info: CameraInfo | None
    points: PointCloud2 | None
    colored: Image | None
    depth_scale: float  # the focal rescaling factor applied to the depth (1.0: none)


@dataclass(frozen=True)
class FrameOutputs(DepthOutputs):
    """The messages of one frame, and what the node reports about it."""

    embedding: Float32MultiArray | None
    inference_s: float
    image_size: tuple[int, int]  # (width, height) of the decoded input image
    # (width, height) the CameraInfo described when that differed from the image (it was rescaled).
    camera_info_size_mismatch: tuple[int, int] | None


def decode_image(message: Image | CompressedImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of a raw or compressed image; raises ImageConversionError."""
    if isinstance(message, CompressedImage):
        return compressed_msg_to_rgb(message)
    return image_msg_to_rgb(message)


def output_header(source: Header, frame_id: str) -> Header:
    """The header of every output of a frame: the image's stamp, ``frame_id`` (empty: the image's)."""
    return Header(
        stamp=Time(sec=source.stamp.sec, nanosec=source.stamp.nanosec),
        frame_id=frame_id or source.frame_id,
    )


def embedding_message(embedding: np.ndarray) -> Float32MultiArray:
    """A Float32MultiArray holding one embedding vector, its dimension labelled."""
    vector = np.ascontiguousarray(embedding, dtype=np.float32).reshape(-1)
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=EMBEDDING_LABEL, size=vector.size, stride=vector.size)]
    msg.layout.data_offset = 0
    values = array.array("f")
    values.frombytes(vector.tobytes())
    msg.data = values
    return msg


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

    def _builds_cloud_on_device(self, depth: Any, settings: OutputSettings, rgb: np.ndarray | None) -> bool:
        if not isinstance(depth, torch.Tensor):
            return False
        on_device = depth.device.type != "cpu" if self._cloud_on_device is None else self._cloud_on_device
        # The device builder writes the node's default layout only: organised, full resolution, xyz.
        with_colours = settings.points_rgb and rgb is not None
        return on_device and settings.points_organized and settings.points_stride == 1 and not with_colours

    def build(
        self,
        depth: Any,
        source_header: Header,
        calibration: CameraCalibration | None,
        settings: OutputSettings,
        rgb: np.ndarray | None = None,
        clock: StageClock | None = None,
    ) -> DepthOutputs:
        """The outputs of one depth map.

        Args:
            depth: (H, W) metric depth at the output size, a float32 NumPy array or a torch tensor
                (on any device). Not modified.
            source_header: header of the image the depth was predicted from (stamp, frame id).
            calibration: the image's CameraInfo; None: depth image only, no focal rescaling.
            settings: what to build.
            rgb: the image's (H', W', 3) RGB pixels, for the cloud's colours (resized to the depth
                map when the sizes differ); only read with ``settings.points_rgb``.
            clock: charges the work to the stages ``pointcloud``, ``depth_msg`` and ``colored``.

        Raises PointCloudError (a ValueError) when the cloud cannot be built.
        """
        clock = clock or StageClock()
        out_height, out_width = depth.shape
        header = output_header(source_header, settings.frame_id)

        depth_scale = 1.0
        depth_info = None
        if calibration is not None:
            camera = calibration.intrinsics
            if settings.focal_rescale:
                # The factor compares focal lengths relative to image size, so the CameraInfo's
                # own size serves whatever size the image arrived at.
                depth_scale = focal_rescale_factor(camera.fx, camera.fy, (camera.height, camera.width), self._record)
            # From the CameraInfo's image straight to the depth map's size (a pure scaling, so the
            # same as rescaling to the image first).
            depth_info = scale_camera_info(calibration.info, out_width, out_height)
            depth_info.header = header

        points = None
        wants_points = settings.publish_points and depth_info is not None
        if wants_points and self._builds_cloud_on_device(depth, settings, rgb):
            scaled = depth.float() * depth_scale if depth_scale != 1.0 else depth.float()
            # The depth image's range applies to the cloud as well: one validity test for both.
            points = self._device_clouds.build(
                scaled,
                CameraIntrinsics.from_camera_info(depth_info),
                header,
                min_depth=settings.min_depth,
                max_range=min(settings.max_depth, settings.cloud_max_range),
            )
            clock.stamp("pointcloud")
        if not isinstance(depth, np.ndarray):
            depth = depth.float().cpu().numpy()  # a torch tensor
        if depth_scale != 1.0:
            depth = depth * np.float32(depth_scale)  # not in place: the engine may own that buffer

        valid = valid_depth_mask(depth, settings.min_depth, settings.max_depth)
        depth = np.where(valid, depth, np.float32(np.nan))
        depth_image = depth_to_image_msg(
            depth, header, settings.depth_encoding, settings.min_depth, settings.max_depth
        )
        clock.stamp("depth_msg")

        if wants_points and points is None:
            colours = None
            if settings.points_rgb and rgb is not None:
                colours = rgb if rgb.shape[:2] == depth.shape else cv2.resize(
                    rgb, (out_width, out_height), interpolation=cv2.INTER_AREA
                )
            points = self._clouds.build(
                depth,
                CameraIntrinsics.from_camera_info(depth_info),
                header,
                organized=settings.points_organized,
                stride=settings.points_stride,
                max_range=settings.cloud_max_range,
                rgb=colours,
            )
            clock.stamp("pointcloud")

        colored = None
        if settings.colormap is not None:
            bgr = colorize_depth(depth, settings.min_depth, settings.max_depth, settings.colormap)
            # rgb_to_image_msg takes RGB and writes bgr8 itself.
            colored = rgb_to_image_msg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), header, encoding="bgr8")
            clock.stamp("colored")

        return DepthOutputs(
            depth_image=depth_image,
            depth_camera_info=depth_info,
            points=points,
            colored=colored,
            depth_scale=depth_scale,
        )


class DepthFrameProcessor:
    """Runs the predictor on frames (inference step) and hands the depth to a DepthOutputBuilder."""

    def __init__(self, predictor: DepthPredictor) -> None:
        self._predictor = predictor
        self._outputs = DepthOutputBuilder(predictor.record)
        self._synchronize = device_synchronizer(predictor.device)

    def process(
        self,
        message: Image | CompressedImage,
        calibration: CameraCalibration | None,
        settings: DepthNodeSettings,
        clock: StageClock | None = None,
    ) -> FrameOutputs:
        """All enabled outputs of one frame. Raises ValueError subclasses (ImageConversionError,
        CameraInfoError, PointCloudError) for input that cannot be used; the text says why.

        ``clock`` (benchmarks) is charged ``image_to_array``, ``inference`` and the output stages.
        """
        clock = clock or StageClock()
        rgb = decode_image(message)
        image_height, image_width = rgb.shape[:2]
        clock.stamp("image_to_array")

        started = time.perf_counter()
        prediction = self._predictor.infer(
            rgb[None],
            output_size=settings.output_size or (image_height, image_width),
            with_embedding=settings.publish_embedding,
        )
        depth = prediction.depth[0]  # stays where it is: a GPU map gets its cloud built there
        embedding = None if prediction.embedding is None else prediction.embedding[0].float().cpu().numpy()
        self._synchronize()  # so that inference_s is the GPU's time too, not only the launches
        inference_s = time.perf_counter() - started
        clock.stamp("inference")

        size_mismatch = None
        if calibration is not None:
            camera = calibration.intrinsics
            if (camera.width, camera.height) != (image_width, image_height):
                size_mismatch = (camera.width, camera.height)

        outputs = self._outputs.build(
            depth, message.header, calibration, OutputSettings.from_node_settings(settings), rgb=rgb, clock=clock
        )
        return FrameOutputs(
            **vars(outputs),
            embedding=None if embedding is None else embedding_message(embedding),
            inference_s=inference_s,
            image_size=(image_width, image_height),
            camera_info_size_mismatch=size_mismatch,
        )
