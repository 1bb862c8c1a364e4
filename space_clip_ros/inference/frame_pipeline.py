"""The depth node's per-frame work without DDS: Image message in, depth Image and PointCloud2 out.

Used by the benchmark to time what a frame costs end to end, stage by stage, and usable by the
node itself. On a GPU the point cloud is back-projected on the device (one copy of the finished
cloud to the host); on the CPU the NumPy builder of :mod:`space_clip_ros.msgs` is used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

from ..msgs import CameraIntrinsics, PointCloudBuilder, depth_to_image_msg, image_msg_to_rgb
from .device_pointcloud import DevicePointCloudBuilder
from .predictor import DepthPredictor


@dataclass
class StageClock:
    """Wall time per named stage; the device is synchronised at each stamp so GPU work is counted."""

    synchronize: Callable[[], None] = lambda: None
    seconds: dict[str, float] = field(default_factory=dict)
    _last: float = 0.0

    def start(self) -> None:
        self.synchronize()
        self._last = time.perf_counter()

    def stamp(self, stage: str) -> None:
        self.synchronize()
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + (now - self._last)
        self._last = now


@dataclass
class FrameOutputs:
    depth_msg: Image
    cloud_msg: PointCloud2 | None


class FramePipeline:
    """One camera frame through conversion, inference, depth message and point cloud.

    Args:
        predictor: the depth predictor.
        with_cloud: also build the organised PointCloud2.
        depth_encoding: ``32FC1`` (metres) or ``16UC1`` (millimetres), REP 118.
        max_range: points beyond this depth are NaN in the cloud.
        cloud_on_device: back-project in torch on the predictor's device (default: on CUDA only).
    """

    def __init__(
        self,
        predictor: DepthPredictor,
        *,
        with_cloud: bool = True,
        depth_encoding: str = "32FC1",
        max_range: float = math.inf,
        cloud_on_device: bool | None = None,
    ) -> None:
        self.predictor = predictor
        self.with_cloud = with_cloud
        self.depth_encoding = depth_encoding
        self.max_range = max_range
        self.cloud_on_device = predictor.device.type == "cuda" if cloud_on_device is None else cloud_on_device
        self._device_clouds = DevicePointCloudBuilder()
        self._host_clouds = PointCloudBuilder()

    def process(
        self, image_msg: Image, intrinsics: CameraIntrinsics, clock: StageClock | None = None
    ) -> FrameOutputs:
        """Depth at the image's resolution; ``intrinsics`` must describe that resolution."""
        clock = clock or StageClock()
        clock.start()
        rgb = image_msg_to_rgb(image_msg)
        clock.stamp("image_msg_to_array")
        depth = self.predictor.infer(rgb[None], output_size=rgb.shape[:2]).depth[0]
        clock.stamp("inference")
        header = Header(stamp=image_msg.header.stamp, frame_id=image_msg.header.frame_id)
        cloud = None
        if self.with_cloud and self.cloud_on_device:
            cloud = self._device_clouds.build(depth, intrinsics, header, max_range=self.max_range)
            clock.stamp("pointcloud")
        depth_host = depth.cpu().numpy()
        depth_msg = depth_to_image_msg(depth_host, header, encoding=self.depth_encoding)
        clock.stamp("depth_msg")
        if self.with_cloud and not self.cloud_on_device:
            cloud = self._host_clouds.build(depth_host, intrinsics, header, max_range=self.max_range)
            clock.stamp("pointcloud")
        return FrameOutputs(depth_msg=depth_msg, cloud_msg=cloud)


def default_intrinsics(height: int, width: int) -> CameraIntrinsics:
    """A plausible pinhole camera for benchmarks (horizontal field of view about 65 degrees)."""
    focal = 0.78 * width
    return CameraIntrinsics(fx=focal, fy=focal, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0, width=width, height=height)
