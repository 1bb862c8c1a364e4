"""Organised point clouds back-projected where the depth map already is (the GPU, on a GPU machine).

Same geometry and byte layout as :class:`space_clip_ros.msgs.PointCloudBuilder` with
``organized=True`` (REP 103/105 optical frame; x, y, z float32 then 4 zero bytes, point_step 16;
NaN points where the depth is invalid), but the multiplications run in torch on the depth map's
device and the finished cloud crosses to the host in one copy, instead of copying the depth map
down and back-projecting with NumPy on the CPU.
"""

from __future__ import annotations

import array
import math
import sys

import numpy as np
import torch
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from ..msgs import CameraIntrinsics, point_fields

POINT_STEP = 16  # x, y, z float32 + 4 bytes padding, as depth_image_proc publishes
if sys.byteorder != "little":  # pragma: no cover - every ROS 2 tier-1 platform is little endian
    raise ImportError("DevicePointCloudBuilder writes little-endian clouds and needs a little-endian host")
_FLOATS_PER_POINT = POINT_STEP // 4


class DevicePointCloudBuilder:
    """Builds xyz PointCloud2 messages from (H, W) depth tensors, caching the ray grid per camera."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._rays: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rays_for(self, intrinsics: CameraIntrinsics, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (intrinsics, device)
        if self._rays is None or self._key != key:
            # float64 then float32, as the NumPy builder does, so both give the same numbers.
            columns = (np.arange(intrinsics.width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
            rows = (np.arange(intrinsics.height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
            self._rays = (
                torch.from_numpy(columns.astype(np.float32)).to(device).view(1, -1),
                torch.from_numpy(rows.astype(np.float32)).to(device).view(-1, 1),
            )
            self._key = key
        return self._rays

    def points(
        self, depth: torch.Tensor, intrinsics: CameraIntrinsics, min_depth: float = 0.0, max_range: float = math.inf
    ) -> torch.Tensor:
        """(H, W, 4) float32 [x, y, z, 0] on the depth's device; NaN xyz where the depth is invalid.

        Valid exactly as for the NumPy builder (``msgs.valid_depth_mask``): finite, >= min_depth
        (> 0 when min_depth is 0) and <= max_range.
        """
        if depth.ndim != 2:
            raise ValueError(f"expected an (H, W) depth tensor, got shape {tuple(depth.shape)}")
        height, width = depth.shape
        if (intrinsics.width, intrinsics.height) != (width, height):
            raise ValueError(
                f"intrinsics are for a {intrinsics.width}x{intrinsics.height} image but the depth map is "
                f"{width}x{height}; scale them first (CameraIntrinsics.scaled_to)"
            )
        intrinsics.validate()
        x_over_z, y_over_z = self._rays_for(intrinsics, depth.device)
        z = depth.float()
        valid = (z >= min_depth) if min_depth > 0.0 else (z > 0.0)  # NaN compares False
        valid &= (z <= max_range) if math.isfinite(max_range) else torch.isfinite(z)
        z = torch.where(valid, z, torch.full_like(z, float("nan")))
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
        data = array.array("B", bytes(1)) * (POINT_STEP * height * width)
        torch.frombuffer(data, dtype=torch.float32).copy_(points.reshape(-1))
        msg = PointCloud2(
            header=header,
            height=height,
            width=width,
            fields=point_fields(with_rgb=False),
            is_bigendian=False,
            point_step=POINT_STEP,
            row_step=POINT_STEP * width,
            is_dense=False,
        )
        msg.data = data  # after construction: the constructor would copy the buffer once more
        return msg
