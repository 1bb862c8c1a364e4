"""One camera frame in, the depth node's output messages out (no rclpy: callable from tests and tools).

Conversions and geometry are the ``msgs`` package's; inference is the predictor's. This module only
decides which of them run for a frame, in which order, and at which size:

1. decode the image message to RGB (raw or compressed);
2. one encoder + decoder pass at the output size (with the CLIP embedding when asked for);
3. rescale depth by focal length (when on, and a CameraInfo is known);
4. apply [min_depth, max_depth]: the depth image, the cloud and the colour picture all show the
   same valid pixels, so each cloud point is the back-projection of its depth pixel;
5. build the messages, all with the image's stamp and the output frame id.
"""

from __future__ import annotations

import array
import time
from dataclasses import dataclass

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32MultiArray, Header, MultiArrayDimension

from space_clip_ros.inference.predictor import DepthPredictor, focal_rescale_factor
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
class FrameOutputs:
    """The messages of one frame; None where an output is off or cannot be made yet."""

    depth_image: Image
    depth_camera_info: CameraInfo | None
    points: PointCloud2 | None
    colored: Image | None
    embedding: Float32MultiArray | None
    inference_s: float
    depth_scale: float
    image_size: tuple[int, int]  # (width, height) of the decoded input image
    # (width, height) the CameraInfo described when that differed from the image (it was rescaled).
    camera_info_size_mismatch: tuple[int, int] | None


def decode_image(message: Image | CompressedImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of a raw or compressed image; raises ImageConversionError."""
    if isinstance(message, CompressedImage):
        return compressed_msg_to_rgb(message)
    return image_msg_to_rgb(message)


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


class DepthFrameProcessor:
    """Runs the predictor on frames and builds the output messages; keeps the cloud ray cache."""

    def __init__(self, predictor: DepthPredictor) -> None:
        self._predictor = predictor
        self._clouds = PointCloudBuilder()

    def process(
        self,
        message: Image | CompressedImage,
        calibration: CameraCalibration | None,
        settings: DepthNodeSettings,
    ) -> FrameOutputs:
        """All enabled outputs of one frame. Raises ValueError subclasses (ImageConversionError,
        CameraInfoError, PointCloudError) for input that cannot be used; the text says why."""
        rgb = decode_image(message)
        image_height, image_width = rgb.shape[:2]
        out_height, out_width = settings.output_size or (image_height, image_width)

        started = time.perf_counter()
        prediction = self._predictor.infer(
            rgb[None], output_size=(out_height, out_width), with_embedding=settings.publish_embedding
        )
        depth = prediction.depth[0].float().cpu().numpy()
        embedding = None if prediction.embedding is None else prediction.embedding[0].float().cpu().numpy()
        inference_s = time.perf_counter() - started

        header = Header(
            stamp=Time(sec=message.header.stamp.sec, nanosec=message.header.stamp.nanosec),
            frame_id=settings.frame_id or message.header.frame_id,
        )

        size_mismatch = None
        depth_scale = 1.0
        depth_info = None
        if calibration is not None:
            camera = calibration.intrinsics
            if (camera.width, camera.height) != (image_width, image_height):
                size_mismatch = (camera.width, camera.height)
            if settings.focal_rescale:
                # The factor compares focal lengths relative to image size, so the CameraInfo's
                # own size serves whatever size the image arrived at.
                depth_scale = focal_rescale_factor(
                    camera.fx, camera.fy, (camera.height, camera.width), self._predictor.record
                )
            # From the CameraInfo's image straight to the depth map's size (a pure scaling, so the
            # same as rescaling to the image first).
            depth_info = scale_camera_info(calibration.info, out_width, out_height)
            depth_info.header = header
        if depth_scale != 1.0:
            depth = depth * np.float32(depth_scale)  # not in place: the engine may own that buffer

        valid = valid_depth_mask(depth, settings.min_depth, settings.max_depth)
        depth = np.where(valid, depth, np.float32(np.nan))
        depth_image = depth_to_image_msg(
            depth, header, settings.depth_encoding, settings.min_depth, settings.max_depth
        )

        points = None
        if settings.publish_points and depth_info is not None:
            colours = None
            if settings.points_rgb:
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

        colored = None
        if settings.publish_colored:
            bgr = colorize_depth(depth, settings.min_depth, settings.max_depth, settings.colormap)
            # rgb_to_image_msg takes RGB and writes bgr8 itself.
            colored = rgb_to_image_msg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), header, encoding="bgr8")

        return FrameOutputs(
            depth_image=depth_image,
            depth_camera_info=depth_info,
            points=points,
            colored=colored,
            embedding=None if embedding is None else embedding_message(embedding),
            inference_s=inference_s,
            depth_scale=depth_scale,
            image_size=(image_width, image_height),
            camera_info_size_mismatch=size_mismatch,
        )
