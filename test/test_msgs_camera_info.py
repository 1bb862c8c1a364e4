"""CameraIntrinsics, CameraInfo scaling (image_proc resize convention) and CameraInfo building."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from space_clip_ros.msgs import (
    CameraInfoError,
    CameraIntrinsics,
    camera_info_from_intrinsics,
    scale_camera_info,
)

TUM = CameraIntrinsics(fx=520.9, fy=521.0, cx=325.1, cy=249.7, width=640, height=480)


@pytest.fixture
def header() -> Header:
    return Header(stamp=Time(sec=7, nanosec=11), frame_id="camera_optical_frame")


def stereo_right_info(header: Header) -> CameraInfo:
    """A calibrated 640x480 right stereo camera: distortion, rectification and a baseline in P."""
    info = CameraInfo(
        header=header,
        width=640,
        height=480,
        distortion_model="plumb_bob",
        d=[0.1, -0.2, 0.001, 0.002, 0.03],
    )
    info.k = np.array([520.9, 0.0, 325.1, 0.0, 521.0, 249.7, 0.0, 0.0, 1.0])
    info.r = np.array([0.9999, -0.01, 0.0, 0.01, 0.9999, 0.0, 0.0, 0.0, 1.0])
    # Tx = -fx' * baseline (0.12 m); Ty set too so its scaling is visible.
    info.p = np.array([515.0, 0.0, 320.5, -61.8, 0.0, 515.0, 240.25, 3.0, 0.0, 0.0, 1.0, 0.0])
    return info


def test_scaled_to_half_size_worked_example():
    half = TUM.scaled_to(320, 240)
    assert (half.width, half.height) == (320, 240)
    assert half.fx == pytest.approx(260.45, rel=1e-12)
    assert half.fy == pytest.approx(260.5, rel=1e-12)
    assert half.cx == pytest.approx(162.55, rel=1e-12)
    assert half.cy == pytest.approx(124.85, rel=1e-12)


def test_scaled_to_non_uniform_size_scales_each_axis_by_its_own_factor():
    square = TUM.scaled_to(224, 224)  # sx = 0.35, sy = 224 / 480
    assert square.fx == pytest.approx(520.9 * 0.35, rel=1e-12)
    assert square.cx == pytest.approx(325.1 * 0.35, rel=1e-12)
    assert square.fy == pytest.approx(521.0 * 224 / 480, rel=1e-12)
    assert square.cy == pytest.approx(249.7 * 224 / 480, rel=1e-12)
    # Scaling back recovers the original camera.
    back = square.scaled_to(640, 480)
    for name in ("fx", "fy", "cx", "cy"):
        assert getattr(back, name) == pytest.approx(getattr(TUM, name), rel=1e-12)


def test_scaled_to_with_pixel_centre_alignment():
    half = TUM.scaled_to(320, 240, align_pixel_centres=True)
    assert half.fx == pytest.approx(260.45, rel=1e-12)
    assert half.cx == pytest.approx((325.1 + 0.5) * 0.5 - 0.5, rel=1e-12)
    assert half.cy == pytest.approx((249.7 + 0.5) * 0.5 - 0.5, rel=1e-12)
    # Pixel-centre rule: the centre of source pixels 0 and 1 (u = 0.5) is the centre of target pixel 0.
    ray_source = (0.5 - TUM.cx) / TUM.fx
    ray_target = (0.0 - half.cx) / half.fx
    assert ray_target == pytest.approx(ray_source, rel=1e-12)


def test_from_camera_info_reads_k(header):
    intrinsics = CameraIntrinsics.from_camera_info(stereo_right_info(header))
    assert intrinsics == TUM


def test_from_camera_info_applies_binning_and_roi(header):
    info = stereo_right_info(header)
    info.binning_x, info.binning_y = 2, 2
    info.roi = RegionOfInterest(x_offset=100, y_offset=40, width=400, height=300)
    intrinsics = CameraIntrinsics.from_camera_info(info)
    assert (intrinsics.width, intrinsics.height) == (200, 150)
    assert intrinsics.fx == pytest.approx(520.9 / 2)
    assert intrinsics.fy == pytest.approx(521.0 / 2)
    assert intrinsics.cx == pytest.approx((325.1 - 100) / 2)
    assert intrinsics.cy == pytest.approx((249.7 - 40) / 2)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"fx": 0.0}, r"focal length fx = 0.0; expected a finite value > 0"),
        ({"fy": -5.0}, r"focal length fy = -5.0"),
        ({"fx": math.nan}, r"focal length fx = nan"),
        ({"cx": math.inf}, r"principal point cx = inf"),
        ({"width": 0}, r"image size 0x480; expected width and height > 0"),
        ({"height": -1}, r"image size 640x-1"),
    ],
)
def test_validate_names_the_bad_value(changes, message):
    params = dict(fx=TUM.fx, fy=TUM.fy, cx=TUM.cx, cy=TUM.cy, width=TUM.width, height=TUM.height)
    params.update(changes)
    with pytest.raises(CameraInfoError, match=message):
        CameraIntrinsics(**params).validate()


def test_from_camera_info_refuses_uncalibrated_and_zero_sized_infos(header):
    with pytest.raises(CameraInfoError, match="K is all zeros"):
        CameraIntrinsics.from_camera_info(CameraInfo(header=header, width=640, height=480))
    zero_size = stereo_right_info(header)
    zero_size.width = 0
    with pytest.raises(CameraInfoError, match="describes a 0x480 image"):
        CameraIntrinsics.from_camera_info(zero_size)
    zero_focal = stereo_right_info(header)
    zero_focal.k[0] = 0.0
    with pytest.raises(CameraInfoError, match="focal length fx = 0.0"):
        CameraIntrinsics.from_camera_info(zero_focal)


def test_scale_camera_info_scales_k_and_p_and_copies_the_rest(header):
    info = stereo_right_info(header)
    scaled = scale_camera_info(info, 224, 168)  # sx = 0.35, sy = 0.35
    s = 0.35
    np.testing.assert_allclose(
        scaled.k, [520.9 * s, 0, 325.1 * s, 0, 521.0 * s, 249.7 * s, 0, 0, 1], rtol=1e-12
    )
    np.testing.assert_allclose(
        scaled.p,
        [515.0 * s, 0, 320.5 * s, -61.8 * s, 0, 515.0 * s, 240.25 * s, 3.0 * s, 0, 0, 1, 0],
        rtol=1e-12,
    )
    # The baseline -Tx / fx' is a physical length and must survive the resize.
    assert -scaled.p[3] / scaled.p[0] == pytest.approx(61.8 / 515.0)
    assert (scaled.width, scaled.height) == (224, 168)
    assert (scaled.binning_x, scaled.binning_y) == (0, 0)
    assert (scaled.roi.x_offset, scaled.roi.y_offset, scaled.roi.width, scaled.roi.height) == (0, 0, 0, 0)
    assert scaled.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(scaled.d, info.d)
    np.testing.assert_array_equal(scaled.r, info.r)
    assert scaled.header.frame_id == "camera_optical_frame"
    assert (scaled.header.stamp.sec, scaled.header.stamp.nanosec) == (7, 11)
    # A copy: the input message is left as it was.
    assert info.k[0] == 520.9 and info.width == 640
    assert scaled.header is not info.header


def test_scale_camera_info_agrees_with_scaled_intrinsics(header):
    scaled = scale_camera_info(stereo_right_info(header), 320, 200)
    assert CameraIntrinsics.from_camera_info(scaled) == TUM.scaled_to(320, 200)


def test_scale_camera_info_folds_roi_and_binning_into_a_full_frame_camera(header):
    info = stereo_right_info(header)
    info.binning_x, info.binning_y = 2, 2
    info.roi = RegionOfInterest(x_offset=100, y_offset=40, width=400, height=300)
    delivered = CameraIntrinsics.from_camera_info(info)  # a 200x150 image
    scaled = scale_camera_info(info, 100, 75)
    assert (scaled.roi.width, scaled.roi.height, scaled.binning_x) == (0, 0, 0)
    assert CameraIntrinsics.from_camera_info(scaled) == delivered.scaled_to(100, 75)
    assert scaled.p[2] == pytest.approx((320.5 - 100) / 2 * 0.5)


def test_scale_camera_info_refuses_zero_target_size(header):
    with pytest.raises(CameraInfoError, match="cannot rescale to image size 0x240"):
        scale_camera_info(stereo_right_info(header), 0, 240)


def test_camera_info_from_intrinsics_round_trips(header):
    info = camera_info_from_intrinsics(TUM, header)
    assert (info.width, info.height) == (640, 480)
    assert info.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(info.d, np.zeros(5))
    np.testing.assert_array_equal(np.asarray(info.r).reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), TUM.matrix())
    np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4)[:, :3], TUM.matrix())
    np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4)[:, 3], 0.0)
    assert info.header.frame_id == header.frame_id
    assert CameraIntrinsics.from_camera_info(info) == TUM
    assert len(camera_info_from_intrinsics(TUM, header, "equidistant").d) == 4
    with pytest.raises(CameraInfoError, match="focal length fy"):
        camera_info_from_intrinsics(CameraIntrinsics(500.0, 0.0, 320.0, 240.0, 640, 480), header)
