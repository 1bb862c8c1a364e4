"""Depth map -> optical-frame points, and the sensor_msgs/PointCloud2 byte layout (and back).

Geometry (REP 103/105 optical frame, SPEC section 6): z forward, x right, y down, with
x = (u - cx) * z / fx and y = (v - cy) * z / fy, u and v the column and row of the pixel in the
depth map the intrinsics describe. :func:`ray_factors` is the one computation of it (the cloud
builders of ``outputs.cloud`` and ``outputs.device_cloud`` and :func:`backproject_depth` use it),
and a point is valid by ``msgs.valid_depth_mask``, the depth image's own rule.

Layout: the one depth_image_proc's point_cloud_xyz / point_cloud_xyzrgb nodes publish, i.e. what
sensor_msgs' ``PointCloud2Modifier::setPointCloud2FieldsByString(1, "xyz")`` and
``(2, "xyz", "rgb")`` build, so RViz and Nav2 read our clouds with no special settings:

* xyz:    x@0, y@4, z@8 (FLOAT32, count 1), 4 bytes padding, point_step 16;
* xyzrgb: x@0, y@4, z@8, padding, rgb@16 (FLOAT32 whose 4 bytes are b, g, r, 0 in memory, i.e.
  the uint32 0x00RRGGBB little endian), 12 bytes padding, point_step 32;

little endian, row_step = point_step * width, padding bytes zero. Organised clouds keep the
(strided) image grid with NaN points where the depth is invalid (is_dense False); unorganised
clouds are one row of the valid points only (is_dense True). The builders fill
:func:`zeroed_points` and wrap it with :func:`pointcloud_message`; the readers serve tests and tools.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from space_clip_ros.msgs._buffers import message_bytes, new_message, zeroed_uint8_array
from space_clip_ros.msgs.camera_info import CameraIntrinsics
from space_clip_ros.msgs.image import valid_depth_mask


class PointCloudError(ValueError):
    """Inputs that cannot make a point cloud, or a PointCloud2 that cannot be read."""


XYZ_POINT_STEP = 16
XYZRGB_POINT_STEP = 32
RGB_OFFSET = 16

_POINT_FIELD_DTYPES = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}


def point_fields(with_rgb: bool = False) -> list[PointField]:
    """The PointField list of an xyz (or xyz + rgb) cloud in depth_image_proc's layout."""
    fields = [
        PointField(name=name, offset=4 * index, datatype=PointField.FLOAT32, count=1)
        for index, name in enumerate("xyz")
    ]
    if with_rgb:
        fields.append(PointField(name="rgb", offset=RGB_OFFSET, datatype=PointField.FLOAT32, count=1))
    return fields


@dataclass(frozen=True)
class RayFactors:
    """Per-column x/z and per-row y/z factors of a (strided) pixel grid."""

    x_over_z: np.ndarray  # (W',) float32
    y_over_z: np.ndarray  # (H', 1) float32


def ray_factors(intrinsics: CameraIntrinsics, stride: int = 1) -> RayFactors:
    """The ray factors of pixels 0, stride, 2*stride, ... (computed in float64, kept as float32)."""
    columns = np.arange(0, intrinsics.width, stride, dtype=np.float64)
    rows = np.arange(0, intrinsics.height, stride, dtype=np.float64)
    return RayFactors(
        x_over_z=((columns - intrinsics.cx) / intrinsics.fx).astype(np.float32),
        y_over_z=((rows - intrinsics.cy) / intrinsics.fy).astype(np.float32)[:, None],
    )


def check_intrinsics_fit(shape: tuple[int, ...], intrinsics: CameraIntrinsics) -> None:
    """Raise :class:`PointCloudError` unless ``intrinsics`` describe an (H, W) map of ``shape``."""
    height, width = shape
    if (intrinsics.width, intrinsics.height) != (width, height):
        raise PointCloudError(
            f"intrinsics are for a {intrinsics.width}x{intrinsics.height} image but the depth map is "
            f"{width}x{height}; scale them first (CameraIntrinsics.scaled_to)"
        )


def check_depth_input(depth_m: np.ndarray, intrinsics: CameraIntrinsics, stride: int) -> np.ndarray:
    """The float32 (H, W) depth map to back-project; PointCloudError for inputs that cannot make points."""
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or depth.size == 0 or not np.issubdtype(depth.dtype, np.floating):
        raise PointCloudError(
            f"expected a non-empty (H, W) floating-point depth map in metres, "
            f"got shape {depth.shape} dtype {depth.dtype}"
        )
    check_intrinsics_fit(depth.shape, intrinsics)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise PointCloudError(f"stride must be an integer >= 1, got {stride!r}")
    intrinsics.validate()
    return depth.astype(np.float32, copy=False)


def masked_depth(depth: np.ndarray, min_depth: float, max_range: float) -> tuple[np.ndarray, np.ndarray]:
    """(depth with NaN where invalid, valid mask); the same validity as the depth image's."""
    valid = valid_depth_mask(depth, min_depth, max_range)
    # Copy then mask: much faster than np.where when most pixels are valid, as they usually are.
    masked = np.array(depth, dtype=np.float32)
    np.copyto(masked, np.float32(np.nan), where=~valid)
    return masked, valid


def backproject_depth(depth_m: np.ndarray, intrinsics: CameraIntrinsics, stride: int = 1) -> np.ndarray:
    """Back-project a depth map to an (H', W', 3) float32 array of optical-frame points.

    Samples pixels 0, stride, 2*stride, ... of the full-resolution map; invalid depths
    (non-finite or <= 0) give NaN points. ``intrinsics`` must describe the depth map's size.
    """
    depth = check_depth_input(depth_m, intrinsics, stride)
    rays = ray_factors(intrinsics, stride)
    z, _ = masked_depth(depth[::stride, ::stride], 0.0, math.inf)
    points = np.empty(z.shape + (3,), dtype=np.float32)
    np.multiply(z, rays.x_over_z, out=points[..., 0])
    np.multiply(z, rays.y_over_z, out=points[..., 1])
    points[..., 2] = z
    return points


def zeroed_points(count: int, floats_per_point: int) -> tuple[array.array, np.ndarray]:
    """A zero-filled message buffer for ``count`` points and a writable (count, k) float32 view of it
    (k = 4 for xyz, 8 for xyzrgb: the point step in 4-byte words)."""
    data = zeroed_uint8_array(4 * floats_per_point * count)
    return data, np.frombuffer(data, dtype="<f4").reshape(count, floats_per_point)


def pointcloud_message(
    header: Header, height: int, width: int, data: array.array, *, with_rgb: bool, is_dense: bool
) -> PointCloud2:
    """A PointCloud2 in the layout above around ``data`` (a filled :func:`zeroed_points` buffer),
    which the message keeps without a copy. Drop every NumPy or torch view of ``data`` first."""
    point_step = XYZRGB_POINT_STEP if with_rgb else XYZ_POINT_STEP
    msg = new_message(
        PointCloud2,
        header=header,
        height=height,
        width=width,
        fields=point_fields(with_rgb=with_rgb),
        is_bigendian=False,
        point_step=point_step,
        row_step=point_step * width,
        is_dense=is_dense,
    )
    msg.data = data  # after construction: the constructor would copy the buffer once more
    return msg


def _structured_points(msg: PointCloud2, names: tuple[str, ...]) -> np.ndarray:
    """An (height, width) structured view of the named fields of ``msg``."""
    fields = {field.name: field for field in msg.fields}
    missing = [name for name in names if name not in fields]
    if missing:
        raise PointCloudError(
            f"PointCloud2 has no field(s) {missing}; it has {sorted(fields)}"
        )
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if point_step <= 0 or row_step < point_step * width:
        raise PointCloudError(
            f"PointCloud2 point_step {point_step} / row_step {row_step} cannot hold {width} points "
            "per row; expected point_step > 0 and row_step >= point_step * width"
        )
    byte_order = ">" if msg.is_bigendian else "<"
    formats = []
    for name in names:
        datatype = fields[name].datatype
        if datatype not in _POINT_FIELD_DTYPES:
            raise PointCloudError(f"field '{name}' has unknown PointField datatype {datatype}")
        formats.append(byte_order + _POINT_FIELD_DTYPES[datatype])
    dtype = np.dtype(
        {
            "names": list(names),
            "formats": formats,
            "offsets": [int(fields[name].offset) for name in names],
            "itemsize": point_step,
        }
    )
    data = message_bytes(msg.data)
    if data.size < row_step * height:
        raise PointCloudError(
            f"PointCloud2 data has {data.size} bytes but row_step*height = {row_step * height}"
        )
    if height * width == 0:
        return np.zeros((height, width), dtype=dtype)
    rows = data[: row_step * height].reshape(height, row_step)[:, : point_step * width]
    return rows.view(dtype)


def pointcloud2_to_xyz_grid(msg: PointCloud2) -> np.ndarray:
    """The points of ``msg`` as a new (height, width, 3) float32 array (NaN points kept)."""
    points = _structured_points(msg, ("x", "y", "z"))
    out = np.empty(points.shape + (3,), dtype=np.float32)
    for index, name in enumerate("xyz"):
        out[..., index] = points[name]
    return out


def pointcloud2_to_xyz(msg: PointCloud2, *, skip_nans: bool = False) -> np.ndarray:
    """The points of ``msg`` as a new (N, 3) float32 array in row-major order."""
    points = pointcloud2_to_xyz_grid(msg).reshape(-1, 3)
    if skip_nans:
        points = points[np.isfinite(points).all(axis=1)]
    return points


def pointcloud2_to_rgb(msg: PointCloud2) -> np.ndarray:
    """The colours of the packed ``rgb`` (or ``rgba``) field of ``msg`` as (N, 3) uint8 RGB."""
    name = "rgb" if any(field.name == "rgb" for field in msg.fields) else "rgba"
    packed_field = _structured_points(msg, (name,))[name].reshape(-1)
    if packed_field.dtype.itemsize != 4:
        raise PointCloudError(f"field '{name}' is {packed_field.dtype}; expected a 4-byte packed colour")
    packed = packed_field.view(packed_field.dtype.byteorder + "u4")
    out = np.empty((packed.size, 3), dtype=np.uint8)
    out[:, 0] = (packed >> 16) & 0xFF
    out[:, 1] = (packed >> 8) & 0xFF
    out[:, 2] = packed & 0xFF
    return out
