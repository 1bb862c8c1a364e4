"""Metric scale anchors: the ground plane of synthetic scenes, sparse metric points, the tracker."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from space_clip_ros.data.synthetic import (
    KITTI_INTRINSICS,
    CameraPose,
    SceneConfig,
    make_scene,
    render,
    trajectory,
)
from space_clip_ros.msgs import CameraIntrinsics, backproject_depth
from space_clip_ros.outputs.cloud import PointCloudBuilder
from space_clip_ros.outputs.scale_anchor import (
    ScaleTracker,
    scale_from_ground_plane,
    scale_from_sparse_points,
    sparse_points_from_cloud,
)

STREET_INTRINSICS = KITTI_INTRINSICS.scaled_to(640, 194)


@pytest.fixture(scope="module")
def street():
    """A seeded street scene (camera 1.65 m above the road, level) and one frame's exact depth."""
    scene = make_scene(SceneConfig(kind="street", seed=0))
    _, depth = render(scene, trajectory(scene, 4)[1], STREET_INTRINSICS)
    return scene, depth


@pytest.mark.parametrize("wrong_scale", [0.7, 1.4])
def test_ground_plane_corrects_a_wrong_scale(street, wrong_scale):
    scene, depth = street
    result = scale_from_ground_plane(depth * np.float32(wrong_scale), STREET_INTRINSICS, scene.camera_height)
    assert result is not None
    assert result.scale * wrong_scale == pytest.approx(1.0, rel=0.02)
    assert result.distance == pytest.approx(scene.camera_height * wrong_scale, rel=0.02)
    assert result.inlier_share > 0.5 and result.tilt_deg < 1.0
    np.testing.assert_allclose(result.normal, [0.0, -1.0, 0.0], atol=0.02)
    again = scale_from_ground_plane(depth * np.float32(wrong_scale), STREET_INTRINSICS, scene.camera_height)
    assert again.scale == result.scale  # seeded: deterministic


def test_ground_plane_of_a_pitched_camera(street):
    """The plane's distance does not depend on the camera's orientation; its normal does."""
    scene, _ = street
    pitch = math.radians(8.0)
    pose = CameraPose.from_yaw(scene.path_start + np.array([0.0, 0.0, 10.0]), pitch=pitch)
    _, depth = render(scene, pose, STREET_INTRINSICS)
    up = (0.0, -math.cos(pitch), -math.sin(pitch))
    level = scale_from_ground_plane(depth * np.float32(1.4), STREET_INTRINSICS, scene.camera_height)
    assert level is not None and level.tilt_deg == pytest.approx(8.0, abs=0.5)
    assert level.scale * 1.4 == pytest.approx(1.0, rel=0.02)
    mounted = scale_from_ground_plane(depth, STREET_INTRINSICS, scene.camera_height, expected_up=up, max_tilt_deg=3.0)
    assert mounted is not None and mounted.tilt_deg < 0.5
    # Told the camera is level and allowed only 3 degrees, the pitched ground is not believed.
    assert scale_from_ground_plane(depth, STREET_INTRINSICS, scene.camera_height, max_tilt_deg=3.0) is None


def test_no_plane_gives_none_and_the_tracker_keeps_its_scale(street):
    scene, depth = street
    intrinsics = CameraIntrinsics(fx=300.0, fy=300.0, cx=159.5, cy=119.5, width=320, height=240)
    # Facing a wall: a plane, but a vertical one (normal along -z), and nothing else in view.
    wall = np.full((240, 320), 3.0, dtype=np.float32)
    slanted = 3.0 / (1.0 + 0.4 * (np.arange(320) - 159.5) / 300.0)  # a wall at 22 degrees to the view
    slanted_wall = np.repeat(slanted[None, :].astype(np.float32), 240, axis=0)
    empty = np.full((240, 320), np.nan, dtype=np.float32)
    tracker = ScaleTracker()
    first = scale_from_ground_plane(depth * np.float32(0.7), STREET_INTRINSICS, scene.camera_height)
    assert tracker.update(first.scale) == pytest.approx(first.scale)
    for no_ground in (wall, slanted_wall, empty):
        assert scale_from_ground_plane(no_ground, intrinsics, 1.0) is None
        assert tracker.update(None) == pytest.approx(first.scale)
    # Too little ground: a wall 3 m ahead hides all of the road but its nearest 8 rows.
    mostly_wall = depth.copy()
    mostly_wall[: depth.shape[0] - 8] = 3.0
    assert scale_from_ground_plane(mostly_wall, STREET_INTRINSICS, scene.camera_height) is None
    # It is the ground, only too little of it: allowed a small share (and the many RANSAC draws a
    # small share needs), the same frame gives the right scale.
    seen = scale_from_ground_plane(
        mostly_wall, STREET_INTRINSICS, scene.camera_height, min_inlier_share=0.05, iterations=20_000
    )
    assert seen is not None and seen.scale == pytest.approx(1.0, rel=0.02) and seen.inlier_share < 0.3
    with pytest.raises(ValueError, match="camera_height"):
        scale_from_ground_plane(depth, STREET_INTRINSICS, 0.0)


def test_smoothing_reduces_jitter_on_a_noisy_sequence():
    """Noise of a learned depth map: per-pixel noise plus a smooth per-frame distortion, which moves
    the fitted plane from frame to frame; smoothing must steady the scale without biasing it."""
    scene = make_scene(SceneConfig(kind="street", seed=1))
    rng = np.random.default_rng(3)
    true_factor = 0.7
    measured = []
    for index, pose in enumerate(trajectory(scene, 16)):
        _, depth = render(scene, pose, STREET_INTRINSICS)
        distortion = cv2.resize(rng.normal(0.0, 0.04, (3, 4)), depth.shape[::-1], interpolation=cv2.INTER_CUBIC)
        noise = 1.0 + distortion + rng.normal(0.0, 0.02, depth.shape)
        result = scale_from_ground_plane(
            (depth * true_factor * noise).astype(np.float32), STREET_INTRINSICS, scene.camera_height, seed=index
        )
        measured.append(None if result is None else result.scale)
    assert sum(m is not None for m in measured) >= 12

    def run(smoothing: float) -> np.ndarray:
        tracker = ScaleTracker(scale_smoothing=smoothing)
        return np.array([tracker.update(m) for m in measured]) * true_factor  # 1 = exact

    raw, smoothed = run(0.0), run(0.7)
    jitter_raw = np.sqrt(np.mean(np.diff(raw) ** 2))
    jitter_smoothed = np.sqrt(np.mean(np.diff(smoothed) ** 2))
    assert jitter_raw > 0.002  # the noise really moves the measurement
    assert jitter_smoothed < 0.5 * jitter_raw
    assert abs(np.mean(smoothed[4:]) - 1.0) < 0.05


def test_tracker_smoothing_and_reset_on_jumps():
    tracker = ScaleTracker(scale_smoothing=0.5, scale_reset_ratio=1.5)
    assert tracker.scale == 1.0 and not tracker.has_measurement
    assert tracker.update(2.0) == 2.0  # the first measurement is taken as is
    assert tracker.update(2.2) == pytest.approx(2.1)
    assert tracker.update(None) == pytest.approx(2.1)
    assert tracker.update(float("nan")) == pytest.approx(2.1)
    assert tracker.update(-1.0) == pytest.approx(2.1)
    assert tracker.update(5.0) == 5.0  # a jump beyond 1.5x: reset, no crawl through the smoothing
    assert tracker.update(5.0 / 1.6) == pytest.approx(5.0 / 1.6)  # downwards too
    tracker.reset()
    assert tracker.scale == 1.0 and not tracker.has_measurement

    patient = ScaleTracker(scale_smoothing=0.0, scale_reset_ratio=1.5, scale_reset_frames=2)
    patient.update(1.0)
    assert patient.update(3.0) == 1.0  # one outlying frame is ignored
    assert patient.update(1.1) == pytest.approx(1.1)  # and the streak is broken
    assert patient.update(3.0) == pytest.approx(1.1)
    assert patient.update(3.0) == 3.0  # two in a row: reset
    for bad in ({"scale_smoothing": 1.0}, {"scale_reset_ratio": 1.0}, {"scale_reset_frames": 0}):
        with pytest.raises(ValueError):
            ScaleTracker(**bad)


def _sparse_points(depth: np.ndarray, intrinsics: CameraIntrinsics, count: int, seed: int) -> np.ndarray:
    """``count`` metric points of the scene: exact depth back-projected at random valid pixels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(depth > 0)
    pick = rng.choice(len(rows), size=count, replace=False)
    return backproject_depth(depth, intrinsics)[rows[pick], cols[pick]].astype(np.float64)


def test_sparse_points_recover_a_known_scale_despite_outliers(street):
    scene, depth = street
    rng = np.random.default_rng(11)
    points = _sparse_points(depth, STREET_INTRINSICS, 64, seed=5)
    points *= rng.normal(1.0, 0.005, (64, 1))  # a little range noise on every point
    outliers = rng.choice(64, size=13, replace=False)  # 20 %
    points[outliers] *= rng.choice([0.4, 0.6, 1.6, 2.5], size=(13, 1))
    predicted = depth / np.float32(1.3)  # the network's depth is 1.3x too short
    result = scale_from_sparse_points(predicted, STREET_INTRINSICS, points)
    assert result is not None
    scale, inlier_share = result
    assert scale == pytest.approx(1.3, rel=0.02)
    assert inlier_share == pytest.approx(51 / 64, abs=0.05)


def test_sparse_points_from_a_pointcloud2_and_unusable_points(street):
    scene, depth = street
    predicted = depth * np.float32(0.8)
    # A metric cloud (here: the exact depth every 16 pixels), read by the msgs reader, no second parser.
    header = Header(stamp=Time(sec=0, nanosec=0), frame_id="camera_optical_frame")
    msg = PointCloudBuilder().build(depth, STREET_INTRINSICS, header, organized=True, stride=16)
    points = sparse_points_from_cloud(msg)
    assert points.dtype == np.float32 and points.shape == (np.count_nonzero(depth[::16, ::16] > 0), 3)
    # Points behind the camera, outside the image or NaN are not used.
    extra = np.array([[0.0, 0.0, -5.0], [100.0, 0.0, 1.0], [np.nan, 0.0, 3.0]])
    scale, share = scale_from_sparse_points(predicted, STREET_INTRINSICS, np.vstack([points, extra]))
    assert scale == pytest.approx(1.25, rel=1e-4) and share == 1.0
    assert scale_from_sparse_points(predicted, STREET_INTRINSICS, extra) is None
    with pytest.raises(ValueError, match="N, 3"):
        scale_from_sparse_points(predicted, STREET_INTRINSICS, np.zeros((4, 2)))
