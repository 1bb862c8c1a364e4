"""The NumPy point cloud builder: depth maps in, PointCloud2 messages out.

Geometry, validity and byte layout are ``msgs.pointcloud``'s (:func:`~space_clip_ros.msgs.pointcloud.ray_factors`,
``msgs.valid_depth_mask``, :func:`~space_clip_ros.msgs.pointcloud.pointcloud_message`); the torch
builder of :mod:`space_clip_ros.outputs.device_cloud` makes the same bytes from the same pieces.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from space_clip_ros.data.camera import CameraIntrinsics
from space_clip_ros.msgs.pointcloud import (
    RGB_OFFSET,
    XYZ_POINT_STEP,
    XYZRGB_POINT_STEP,
    PointCloudError,
    RayFactors,
    check_depth_input,
    masked_depth,
    pointcloud_message,
    ray_factors,
    zeroed_points,
)

_RGB_INDEX = RGB_OFFSET // 4  # in 4-byte words
_FLOATS_PER_XYZ_POINT = XYZ_POINT_STEP // 4
_FLOATS_PER_XYZRGB_POINT = XYZRGB_POINT_STEP // 4


class PointCloudBuilder:
    """Builds PointCloud2 messages from depth maps, reusing the ray grid between frames.

    The ray factors depend only on the intrinsics and the stride, so a stream from one camera
    computes them once; per frame only a few multiplies and one buffer fill remain. Not
    thread-safe: use one builder per thread.
    """

    def __init__(self) -> None:
        self._rays_key: tuple[CameraIntrinsics, int] | None = None
        self._rays: RayFactors | None = None
        # Organised scratch grid of unorganised clouds, kept so each frame does not fault in fresh pages.
        self._scratch: np.ndarray | None = None

    def _rays_for(self, intrinsics: CameraIntrinsics, stride: int) -> RayFactors:
        key = (intrinsics, int(stride))
        if self._rays is None or self._rays_key != key:
            self._rays = ray_factors(intrinsics, stride)
            self._rays_key = key
        return self._rays

    def _scratch_grid(self, height: int, width: int, floats_per_point: int) -> np.ndarray:
        shape = (height, width, floats_per_point)
        if self._scratch is None or self._scratch.shape != shape:
            self._scratch = np.zeros(shape, dtype="<f4")  # padding stays zero: fills never touch it
        return self._scratch

    def build(
        self,
        depth_m: np.ndarray,
        intrinsics: CameraIntrinsics,
        header: Header,
        *,
        organized: bool = True,
        stride: int = 1,
        max_range: float = math.inf,
        min_depth: float = 0.0,
        rgb: np.ndarray | None = None,
    ) -> PointCloud2:
        """A PointCloud2 of ``depth_m`` (metres, (H, W)) seen through ``intrinsics``.

        A point is valid when its depth is finite, > 0, >= min_depth and <= max_range (both on z).
        ``rgb`` ((H, W, 3) uint8 RGB, same size as the depth) adds the packed ``rgb`` field.
        """
        depth = check_depth_input(depth_m, intrinsics, stride)
        if rgb is not None:
            rgb = np.asarray(rgb)
            if rgb.dtype != np.uint8 or rgb.shape != depth.shape + (3,):
                raise PointCloudError(
                    f"rgb must be a {depth.shape + (3,)} uint8 array matching the depth map, "
                    f"got shape {rgb.shape} dtype {rgb.dtype}"
                )
            rgb = rgb[::stride, ::stride]
        rays = self._rays_for(intrinsics, stride)
        z, valid = masked_depth(depth[::stride, ::stride], min_depth, max_range)
        grid_height, grid_width = z.shape
        floats_per_point = _FLOATS_PER_XYZ_POINT if rgb is None else _FLOATS_PER_XYZRGB_POINT

        if organized:
            height, width = grid_height, grid_width
            data, points = zeroed_points(height * width, floats_per_point)
            _fill_points(points.reshape(height, width, floats_per_point), z, rays, rgb)
        else:
            grid = self._scratch_grid(grid_height, grid_width, floats_per_point)
            _fill_points(grid, z, rays, rgb)
            keep = valid.reshape(-1)
            height, width = 1, int(np.count_nonzero(keep))
            data, points = zeroed_points(width, floats_per_point)
            np.compress(keep, grid.reshape(-1, floats_per_point), axis=0, out=points)
        del points  # drop the numpy view of ``data`` before the message takes it
        return pointcloud_message(header, height, width, data, with_rgb=rgb is not None, is_dense=not organized)


def _fill_points(points: np.ndarray, z: np.ndarray, rays: RayFactors, rgb: np.ndarray | None) -> None:
    """Write x, y, z (and packed rgb) of an (H, W, k) point grid; padding is left untouched."""
    np.multiply(z, rays.x_over_z, out=points[..., 0])
    np.multiply(z, rays.y_over_z, out=points[..., 1])
    points[..., 2] = z
    if rgb is not None:
        # The rgb field holds the uint32 0x00RRGGBB, little endian (bytes b, g, r, 0). OpenCV's
        # BGRA has exactly those bytes apart from alpha, and one masked store is faster than three
        # strided byte stores.
        bgra = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGRA)
        np.bitwise_and(
            bgra.view("<u4")[..., 0], np.uint32(0x00FFFFFF), out=points.view("<u4")[..., _RGB_INDEX]
        )
