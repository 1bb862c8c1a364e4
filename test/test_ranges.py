"""Out-of-range depths: NaN mode, REP 117 mode, and what the depth image and the cloud make of them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from space_clip_ros.msgs import (
    CameraIntrinsics,
    depth_to_image_msg,
    image_msg_to_depth,
    pointcloud2_to_xyz,
    pointcloud2_to_xyz_grid,
    valid_depth_mask,
)
from space_clip_ros.outputs.cloud import PointCloudBuilder
from space_clip_ros.outputs.ranges import OUT_OF_RANGE_MODES, apply_out_of_range, invalid_depth_image_value

MIN_DEPTH, MAX_DEPTH = 0.5, 10.0
# One row per kind of pixel: input, expected in "nan" mode, expected in "rep117" mode.
CASES = [
    (2.0, 2.0, 2.0),  # valid
    (MIN_DEPTH, MIN_DEPTH, MIN_DEPTH),  # the range is inclusive at both ends
    (MAX_DEPTH, MAX_DEPTH, MAX_DEPTH),
    (0.2, math.nan, -math.inf),  # too close
    (12.0, math.nan, math.inf),  # beyond max_depth
    (math.inf, math.nan, math.inf),  # already "beyond"
    (-math.inf, math.nan, -math.inf),  # already "too close"
    (math.nan, math.nan, math.nan),  # no estimate
    (0.0, math.nan, math.nan),  # no camera measures 0 or less: no estimate
    (-3.0, math.nan, math.nan),
]


@pytest.fixture
def depth() -> np.ndarray:
    return np.array([[case[0] for case in CASES]], dtype=np.float32)


@pytest.fixture
def header() -> Header:
    return Header(stamp=Time(sec=1, nanosec=2), frame_id="camera_optical_frame")


@pytest.mark.parametrize("mode,column", [("nan", 1), ("rep117", 2)])
def test_modes(depth, mode, column):
    expected = np.array([[case[column] for case in CASES]], dtype=np.float32)
    before = depth.copy()
    with np.errstate(all="raise"):
        out = apply_out_of_range(depth, MIN_DEPTH, MAX_DEPTH, mode)
    assert out.dtype == np.float32 and out.shape == depth.shape
    np.testing.assert_array_equal(out, expected)  # NaN equals NaN here, and -inf != inf
    np.testing.assert_array_equal(depth, before)  # the input is not touched
    # One validity rule: exactly valid_depth_mask's pixels pass through unchanged.
    np.testing.assert_array_equal(np.isfinite(out), valid_depth_mask(depth, MIN_DEPTH, MAX_DEPTH))
    np.testing.assert_array_equal(apply_out_of_range(out, MIN_DEPTH, MAX_DEPTH, mode), out)  # idempotent


def test_default_range_and_bad_arguments():
    depth = np.array([[1e6, 0.0, np.inf, 1e-6]], dtype=np.float32)
    expected = np.array([[1e6, np.nan, np.inf, 1e-6]], dtype=np.float32)
    np.testing.assert_array_equal(apply_out_of_range(depth, mode="rep117"), expected)
    assert OUT_OF_RANGE_MODES == ("nan", "rep117")
    with pytest.raises(ValueError, match="out_of_range must be one of"):
        apply_out_of_range(depth, mode="zero")
    with pytest.raises(ValueError, match="min_depth <= max_depth"):
        apply_out_of_range(depth, 5.0, 1.0)


def test_16uc1_holds_zero_at_every_invalid_pixel_inf_included(depth, header):
    """REP 118: an integer depth image has only 0 for "no reading", whatever the float said."""
    assert invalid_depth_image_value("16UC1") == 0.0 and math.isnan(invalid_depth_image_value("32FC1"))
    with pytest.raises(ValueError, match="encoding"):
        invalid_depth_image_value("mono8")
    for mode in OUT_OF_RANGE_MODES:
        marked = apply_out_of_range(depth, MIN_DEPTH, MAX_DEPTH, mode)
        with np.errstate(all="raise"):
            msg = depth_to_image_msg(marked, header, "16UC1", MIN_DEPTH, MAX_DEPTH)
        millimetres = np.frombuffer(bytes(msg.data), dtype="<u2")
        valid = valid_depth_mask(depth, MIN_DEPTH, MAX_DEPTH)[0]
        assert np.all(millimetres[~valid] == invalid_depth_image_value("16UC1"))
        np.testing.assert_array_equal(millimetres[valid], np.rint(depth[0, valid] * 1000.0))
        back = image_msg_to_depth(msg)
        assert np.all(np.isnan(back[0, ~valid]))


def test_32fc1_passes_rep117_infinities_through_only_when_asked(depth, header):
    """depth_to_image_msg's default is unchanged (NaN for every invalid pixel, +-Inf included);
    keep_infinities writes +-Inf as they are and NaN elsewhere."""
    marked = apply_out_of_range(depth, MIN_DEPTH, MAX_DEPTH, "rep117")
    plain = depth_to_image_msg(marked, header, "32FC1", MIN_DEPTH, MAX_DEPTH)
    assert bytes(plain.data) == bytes(depth_to_image_msg(depth, header, "32FC1", MIN_DEPTH, MAX_DEPTH).data)
    kept = image_msg_to_depth(depth_to_image_msg(marked, header, "32FC1", MIN_DEPTH, MAX_DEPTH,
                                                 keep_infinities=True))
    np.testing.assert_array_equal(kept, marked)  # NaN, +Inf, -Inf and valid depths where they were
    assert np.isposinf(kept).any() and np.isneginf(kept).any() and np.isnan(kept).any()


def test_inf_pixels_make_no_points(depth, header):
    """The cloud applies the same validity test: a REP 117 +-Inf never becomes a point."""
    marked = apply_out_of_range(depth, MIN_DEPTH, MAX_DEPTH, "rep117")
    assert np.isposinf(marked).any() and np.isneginf(marked).any()
    intrinsics = CameraIntrinsics(fx=5.0, fy=5.0, cx=4.5, cy=0.0, width=depth.shape[1], height=1)
    valid = valid_depth_mask(depth, MIN_DEPTH, MAX_DEPTH)[0]
    builder = PointCloudBuilder()
    with np.errstate(all="raise"):
        organised = builder.build(marked, intrinsics, header, organized=True)
        unorganised = builder.build(marked, intrinsics, header, organized=False)
    grid = pointcloud2_to_xyz_grid(organised)[0]
    assert np.all(np.isnan(grid[~valid])) and np.all(np.isfinite(grid[valid]))
    points = pointcloud2_to_xyz(unorganised)
    assert unorganised.is_dense and len(points) == np.count_nonzero(valid)
    np.testing.assert_array_equal(points[:, 2], depth[0, valid])
