"""Depth -> PointCloud2 (msgs.pointcloud geometry and layout, outputs.cloud builder): geometry against a
per-pixel reference, depth_image_proc's layout, readers."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from space_clip_ros.msgs import (
    CameraIntrinsics,
    PointCloudError,
    backproject_depth,
    pointcloud2_to_rgb,
    pointcloud2_to_xyz,
    pointcloud2_to_xyz_grid,
)
from space_clip_ros.outputs.cloud import PointCloudBuilder

TUM_DEPTH = Path("/work/shared/data/real_rgbd/tum_5000/depth_1.png")
TUM_INTRINSICS = CameraIntrinsics(fx=520.9, fy=521.0, cx=325.1, cy=249.7, width=640, height=480)

HEIGHT, WIDTH = 7, 9
SMALL = CameraIntrinsics(fx=11.0, fy=12.5, cx=4.3, cy=2.9, width=WIDTH, height=HEIGHT)


@pytest.fixture
def header() -> Header:
    return Header(stamp=Time(sec=3, nanosec=4), frame_id="camera_optical_frame")


@pytest.fixture
def depth() -> np.ndarray:
    """A 7x9 depth map in metres with holes of every kind."""
    values = np.random.default_rng(1).uniform(0.3, 6.0, (HEIGHT, WIDTH)).astype(np.float32)
    values[0, 0] = 0.0
    values[1, 4] = np.nan
    values[2, 2] = np.inf
    values[3, 7] = -1.0
    values[6, 8] = 9.5  # beyond the max_range used below
    values[5, 1] = 0.2  # nearer than the min_depth used below
    return values


@pytest.fixture
def colours() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def reference_point(depth: np.ndarray, intrinsics: CameraIntrinsics, v: int, u: int) -> tuple[float, ...]:
    """The optical-frame point of pixel (v, u), straight from the formula, in float64."""
    z = float(depth[v, u])
    return ((u - intrinsics.cx) * z / intrinsics.fx, (v - intrinsics.cy) * z / intrinsics.fy, z)


def is_valid(z: float, min_depth: float = 0.0, max_range: float = math.inf) -> bool:
    return math.isfinite(z) and z > min_depth and z <= max_range


def test_organised_cloud_matches_the_per_pixel_formula(depth, header):
    msg = PointCloudBuilder().build(depth, SMALL, header)
    points = pointcloud2_to_xyz_grid(msg)
    assert points.shape == (HEIGHT, WIDTH, 3)
    for v in range(HEIGHT):
        for u in range(WIDTH):
            if is_valid(float(depth[v, u])):
                np.testing.assert_allclose(points[v, u], reference_point(depth, SMALL, v, u), rtol=1e-6)
            else:
                assert np.isnan(points[v, u]).all(), (v, u)


@pytest.mark.parametrize("stride", [2, 3])
def test_strided_cloud_samples_pixels_0_s_2s(depth, header, stride):
    msg = PointCloudBuilder().build(depth, SMALL, header, stride=stride)
    rows, columns = range(0, HEIGHT, stride), range(0, WIDTH, stride)
    assert (msg.height, msg.width) == (len(rows), len(columns))
    points = pointcloud2_to_xyz_grid(msg)
    for i, v in enumerate(rows):
        for j, u in enumerate(columns):
            if is_valid(float(depth[v, u])):
                np.testing.assert_allclose(points[i, j], reference_point(depth, SMALL, v, u), rtol=1e-6)
            else:
                assert np.isnan(points[i, j]).all()


def test_min_depth_and_max_range_invalidate_points(depth, header):
    msg = PointCloudBuilder().build(depth, SMALL, header, min_depth=0.25, max_range=8.0)
    points = pointcloud2_to_xyz_grid(msg)
    assert np.isnan(points[6, 8]).all()  # 9.5 m > max_range
    assert np.isnan(points[5, 1]).all()  # 0.2 m <= min_depth
    expected_valid = np.array(
        [[is_valid(float(z), 0.25, 8.0) for z in row] for row in depth], dtype=bool
    )
    np.testing.assert_array_equal(np.isfinite(points).all(axis=2), expected_valid)


def test_unorganised_cloud_keeps_only_valid_points_in_row_major_order(depth, header):
    msg = PointCloudBuilder().build(depth, SMALL, header, organized=False, min_depth=0.25, max_range=8.0)
    expected = [
        reference_point(depth, SMALL, v, u)
        for v in range(HEIGHT)
        for u in range(WIDTH)
        if is_valid(float(depth[v, u]), 0.25, 8.0)
    ]
    assert msg.height == 1 and msg.width == len(expected) == HEIGHT * WIDTH - 6
    assert msg.is_dense is True
    assert msg.row_step == 16 * len(expected) and len(msg.data) == msg.row_step
    np.testing.assert_allclose(pointcloud2_to_xyz(msg), np.array(expected), rtol=1e-6)


def test_unorganised_cloud_of_a_map_without_readings_is_empty(header):
    no_readings = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    msg = PointCloudBuilder().build(no_readings, SMALL, header, organized=False)
    assert (msg.height, msg.width, msg.row_step, len(msg.data)) == (1, 0, 0, 0)
    assert pointcloud2_to_xyz(msg).shape == (0, 3)


def test_organised_and_unorganised_point_counts(depth, header):
    builder = PointCloudBuilder()
    organised = builder.build(depth, SMALL, header, stride=2)
    unorganised = builder.build(depth, SMALL, header, stride=2, organized=False)
    assert organised.height * organised.width == 4 * 5
    finite = np.isfinite(pointcloud2_to_xyz(organised)).all(axis=1)
    assert unorganised.width == finite.sum() == pointcloud2_to_xyz(organised, skip_nans=True).shape[0]
    np.testing.assert_array_equal(
        pointcloud2_to_xyz(unorganised), pointcloud2_to_xyz(organised, skip_nans=True)
    )


def field_layout(msg: PointCloud2) -> list[tuple[str, int, int, int]]:
    return [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]


def test_xyz_layout_matches_depth_image_proc(depth, header):
    msg = PointCloudBuilder().build(depth, SMALL, header)
    assert field_layout(msg) == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
    ]
    assert msg.point_step == 16 and msg.row_step == 16 * WIDTH
    assert (msg.height, msg.width) == (HEIGHT, WIDTH)
    assert msg.is_bigendian is False and msg.is_dense is False
    assert len(msg.data) == msg.row_step * msg.height
    assert msg.header.frame_id == "camera_optical_frame" and msg.header.stamp.nanosec == 4
    raw = bytes(msg.data)
    # Little-endian floats at their offsets, and zero padding after z.
    v, u = 4, 3
    offset = v * msg.row_step + u * msg.point_step
    x, y, z = struct.unpack_from("<3f", raw, offset)
    np.testing.assert_allclose((x, y, z), reference_point(depth, SMALL, v, u), rtol=1e-6)
    padding = np.frombuffer(raw, np.uint8).reshape(-1, 16)[:, 12:]
    assert not padding.any()


def test_xyzrgb_layout_and_colour_packing(depth, colours, header):
    msg = PointCloudBuilder().build(depth, SMALL, header, rgb=colours)
    assert field_layout(msg) == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 16, PointField.FLOAT32, 1),
    ]
    assert msg.point_step == 32 and msg.row_step == 32 * WIDTH
    raw = bytes(msg.data)
    # Every point carries its pixel's colour, invalid ones too (organised clouds keep the grid).
    for v in range(HEIGHT):
        for u in range(WIDTH):
            offset = v * msg.row_step + u * msg.point_step
            (packed,) = struct.unpack_from("<I", raw, offset + 16)
            assert (packed >> 16 & 0xFF, packed >> 8 & 0xFF, packed & 0xFF) == tuple(colours[v, u])
            assert packed >> 24 == 0  # alpha byte left zero, as depth_image_proc leaves it
    grid = np.frombuffer(raw, np.uint8).reshape(HEIGHT * WIDTH, 32)
    assert not grid[:, 12:16].any() and not grid[:, 20:32].any()
    np.testing.assert_array_equal(pointcloud2_to_rgb(msg), colours.reshape(-1, 3))
    np.testing.assert_array_equal(
        pointcloud2_to_xyz(msg), pointcloud2_to_xyz(PointCloudBuilder().build(depth, SMALL, header))
    )


def test_unorganised_strided_xyzrgb_keeps_colour_with_its_point(depth, colours, header):
    msg = PointCloudBuilder().build(depth, SMALL, header, rgb=colours, stride=2, organized=False)
    kept = [
        (v, u)
        for v in range(0, HEIGHT, 2)
        for u in range(0, WIDTH, 2)
        if is_valid(float(depth[v, u]))
    ]
    assert msg.width == len(kept)
    np.testing.assert_array_equal(pointcloud2_to_rgb(msg), np.array([colours[v, u] for v, u in kept]))
    np.testing.assert_allclose(
        pointcloud2_to_xyz(msg), np.array([reference_point(depth, SMALL, v, u) for v, u in kept]), rtol=1e-6
    )


def test_backproject_depth_matches_the_builder(depth, header):
    points = backproject_depth(depth, SMALL, stride=2)
    assert points.dtype == np.float32 and points.shape == (4, 5, 3)
    np.testing.assert_array_equal(
        points, pointcloud2_to_xyz_grid(PointCloudBuilder().build(depth, SMALL, header, stride=2))
    )
    np.testing.assert_allclose(points[1, 2], reference_point(depth, SMALL, 2, 4), rtol=1e-6)


def test_builder_recomputes_rays_when_the_camera_changes(depth, header):
    builder = PointCloudBuilder()
    builder.build(depth, SMALL, header)
    other = CameraIntrinsics(fx=20.0, fy=18.0, cx=3.0, cy=3.5, width=WIDTH, height=HEIGHT)
    points = pointcloud2_to_xyz_grid(builder.build(depth, other, header))
    np.testing.assert_allclose(points[4, 6], reference_point(depth, other, 4, 6), rtol=1e-6)
    strided = pointcloud2_to_xyz_grid(builder.build(depth, other, header, stride=3))
    np.testing.assert_allclose(strided[1, 2], reference_point(depth, other, 3, 6), rtol=1e-6)


def test_builder_errors_name_the_problem(depth, header):
    builder = PointCloudBuilder()
    with pytest.raises(PointCloudError, match="intrinsics are for a 640x480 image but the depth map is 9x7"):
        builder.build(depth, TUM_INTRINSICS, header)
    with pytest.raises(PointCloudError, match="intrinsics are for a 640x480 image"):
        backproject_depth(depth, TUM_INTRINSICS)
    with pytest.raises(PointCloudError, match="stride must be an integer >= 1, got 0"):
        builder.build(depth, SMALL, header, stride=0)
    with pytest.raises(PointCloudError, match=r"rgb must be a \(7, 9, 3\) uint8 array"):
        builder.build(depth, SMALL, header, rgb=np.zeros((HEIGHT, WIDTH, 3), np.float32))
    with pytest.raises(PointCloudError, match=r"\(H, W\) floating-point depth"):
        builder.build(np.ones((HEIGHT, WIDTH), np.uint16), SMALL, header)


def test_reader_handles_big_endian_doubles_and_row_padding():
    # A hand-made 2x2 cloud: big endian, x/y/z as FLOAT64 in a scrambled order, 5 pad bytes per row.
    points = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[-1.0, np.nan, 0.5], [7.0, 8.0, 9.0]]])
    point_step, row_step = 28, 2 * 28 + 5
    raw = bytearray(row_step * 2)
    for v in range(2):
        for u in range(2):
            x, y, z = points[v, u]
            struct.pack_into(">ddd", raw, v * row_step + u * point_step + 4, z, x, y)
    msg = PointCloud2(
        height=2,
        width=2,
        fields=[
            PointField(name="z", offset=4, datatype=PointField.FLOAT64, count=1),
            PointField(name="x", offset=12, datatype=PointField.FLOAT64, count=1),
            PointField(name="y", offset=20, datatype=PointField.FLOAT64, count=1),
        ],
        is_bigendian=True,
        point_step=point_step,
        row_step=row_step,
        data=bytes(raw),
    )
    np.testing.assert_array_equal(pointcloud2_to_xyz_grid(msg), points.astype(np.float32))
    assert pointcloud2_to_xyz(msg, skip_nans=True).shape == (3, 3)
    with pytest.raises(PointCloudError, match=r"PointCloud2 has no field\(s\) \['rgba'\]"):
        pointcloud2_to_rgb(msg)


def test_real_tum_depth_frame_back_projects_every_reading(header):
    raw = cv2.imread(str(TUM_DEPTH), cv2.IMREAD_UNCHANGED)
    assert raw is not None and raw.dtype == np.uint16 and raw.shape == (480, 640)
    depth = raw.astype(np.float32) / 5000.0
    depth[raw == 0] = np.nan  # 0 = no reading
    msg = PointCloudBuilder().build(depth, TUM_INTRINSICS, header)
    points = pointcloud2_to_xyz_grid(msg)
    np.testing.assert_array_equal(np.isfinite(points).all(axis=2), raw > 0)
    # Spot-check pixels spread over the frame against the formula with the raw 16-bit value.
    rng = np.random.default_rng(3)
    valid_pixels = np.argwhere(raw > 0)
    for v, u in valid_pixels[rng.choice(len(valid_pixels), 200, replace=False)]:
        z = raw[v, u] / 5000.0
        expected = ((u - 325.1) * z / 520.9, (v - 249.7) * z / 521.0, z)
        np.testing.assert_allclose(points[v, u], expected, rtol=1e-6, atol=1e-7)
    # The unorganised cloud has exactly one point per reading, all in front of the camera.
    cloud = pointcloud2_to_xyz(PointCloudBuilder().build(depth, TUM_INTRINSICS, header, organized=False))
    assert cloud.shape == (int((raw > 0).sum()), 3)
    assert cloud[:, 2].min() > 0.0 and cloud[:, 2].max() <= 65535 / 5000.0


def test_built_cloud_survives_rclpy_serialization(depth, colours, header):
    # The message is built around a pre-filled buffer; check that rclpy serialises what we wrote.
    from rclpy.serialization import deserialize_message, serialize_message

    msg = PointCloudBuilder().build(depth, SMALL, header, rgb=colours, organized=False)
    back = deserialize_message(serialize_message(msg), PointCloud2)
    assert bytes(back.data) == bytes(msg.data)
    assert field_layout(back) == field_layout(msg)
    assert (back.width, back.point_step, back.row_step, back.is_dense) == (msg.width, 32, msg.row_step, True)
    np.testing.assert_array_equal(pointcloud2_to_rgb(back), pointcloud2_to_rgb(msg))
