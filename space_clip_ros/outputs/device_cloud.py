"""Organised point clouds back-projected where the depth map already is (the GPU, on a GPU machine).

The same cloud as :class:`~space_clip_ros.outputs.cloud.PointCloudBuilder` with ``organized=True``
(same ray factors and layout of ``msgs.pointcloud``, same validity rule ``msgs.valid_depth_mask``; x, y, z float32 then
4 zero bytes, NaN points where the depth is invalid), but the multiplications run in torch on the
depth map's device and the finished cloud crosses to the host in one copy, instead of copying the
depth map down and back-projecting with NumPy on the CPU.
"""

from __future__ import annotations

import math
import sys

import torch
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from space_clip_ros.data.camera import CameraIntrinsics
from space_clip_ros.msgs.image import valid_depth_mask
from space_clip_ros.msgs.pointcloud import (
    XYZ_POINT_STEP,
    check_intrinsics_fit,
    pointcloud_message,
    ray_factors,
    zeroed_points,
)

if sys.byteorder != "little":  # pragma: no cover - every ROS 2 tier-1 platform is little endian
    raise ImportError("DevicePointCloudBuilder writes little-endian clouds and needs a little-endian host")
_FLOATS_PER_POINT = XYZ_POINT_STEP // 4


class DevicePointCloudBuilder:
    """Builds xyz PointCloud2 messages from (H, W) depth tensors, caching the ray grid per camera."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._rays: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rays_for(self, intrinsics: CameraIntrinsics, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (intrinsics, device)
        if self._rays is None or self._key != key:
            rays = ray_factors(intrinsics)
            self._rays = (
                torch.from_numpy(rays.x_over_z).to(device).view(1, -1),
                torch.from_numpy(rays.y_over_z).to(device).view(-1, 1),
            )
            self._key = key
        return self._rays

    def points(
        self, depth: torch.Tensor, intrinsics: CameraIntrinsics, min_depth: float = 0.0, max_range: float = math.inf
    ) -> torch.Tensor:
        """(H, W, 4) float32 [x, y, z, 0] on the depth's device; NaN xyz where the depth is invalid
        (``msgs.valid_depth_mask``: finite, >= min_depth (> 0 when min_depth is 0), <= max_range)."""
        if depth.ndim != 2:
            raise ValueError(f"expected an (H, W) depth tensor, got shape {tuple(depth.shape)}")
        check_intrinsics_fit(tuple(depth.shape), intrinsics)
        intrinsics.validate()
        height, width = depth.shape
        x_over_z, y_over_z = self._rays_for(intrinsics, depth.device)
        z = depth.float()
        z = torch.where(valid_depth_mask(z, min_depth, max_range), z, torch.full_like(z, float("nan")))
        points = torch.zeros((height, width, _FLOATS_PER_POINT), dtype=torch.float32, device=depth.device)
        torch.mul(z, x_over_z, out=points[..., 0])
        torch.mul(z, y_over_z, out=points[..., 1])
        points[..., 2] = z
        return points

    def build(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics,
        header: Header,
        *,
        min_depth: float = 0.0,
        max_range: float = math.inf,
    ) -> PointCloud2:
        """An organised xyz PointCloud2 of ``depth`` ((H, W) metres, any device)."""
        points = self.points(depth, intrinsics, min_depth, max_range)
        height, width = points.shape[:2]
        # The message's own byte buffer, viewed as a tensor: the device->host copy lands in it
        # directly (one copy, no intermediate host array).
        data, view = zeroed_points(height * width, _FLOATS_PER_POINT)
        torch.from_numpy(view).copy_(points.reshape(height * width, _FLOATS_PER_POINT))
        del view
        return pointcloud_message(header, height, width, data, with_rgb=False, is_dense=False)
