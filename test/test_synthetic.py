"""Synthetic renderer: determinism, exact metric depth, invalid sky, trajectories."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from space_clip_ros.data.camera import CameraIntrinsics
from space_clip_ros.data.synthetic import (
    KITTI_INTRINSICS,
    NYU_INTRINSICS,
    CameraPose,
    SceneConfig,
    make_scene,
    render,
    render_sequence,
    trajectory,
)

SMALL_NYU = NYU_INTRINSICS.scaled_to(160, 120, align_pixel_centres=True)
SMALL_KITTI = KITTI_INTRINSICS.scaled_to(320, 96, align_pixel_centres=True)


def back_project(depth: np.ndarray, intrinsics: CameraIntrinsics, pose: CameraPose) -> np.ndarray:
    """World points (H, W, 3) of a depth map, with the optical-frame formulas of SPEC section 6."""
    v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
    camera = np.stack(
        [(u - intrinsics.cx) * depth / intrinsics.fx, (v - intrinsics.cy) * depth / intrinsics.fy, depth],
        axis=-1,
    )
    return camera @ pose.rotation.T + pose.position


@pytest.mark.parametrize("kind", ["indoor", "street"])
def test_same_seed_same_frames_and_other_seed_differs(kind):
    scene_a = make_scene(SceneConfig(kind=kind, seed=3))
    scene_b = make_scene(SceneConfig(kind=kind, seed=3))
    scene_c = make_scene(SceneConfig(kind=kind, seed=4))
    pose = trajectory(scene_a, 5)[2]
    rgb_a, depth_a = render(scene_a, pose, SMALL_NYU)
    rgb_b, depth_b = render(scene_b, pose, SMALL_NYU)
    rgb_c, depth_c = render(scene_c, pose, SMALL_NYU)
    assert rgb_a.dtype == np.uint8 and rgb_a.shape == (120, 160, 3)
    assert depth_a.dtype == np.float32 and depth_a.shape == (120, 160)
    np.testing.assert_array_equal(rgb_a, rgb_b)
    np.testing.assert_array_equal(depth_a, depth_b)
    assert not np.array_equal(depth_a, depth_c)
    assert not np.array_equal(rgb_a, rgb_c)
    # Images are textured, not flat colour fields.
    assert rgb_a.std() > 10


def test_facing_a_wall_gives_its_exact_distance():
    scene = make_scene(SceneConfig(kind="indoor", seed=1, n_objects=0))
    camera_z = 0.7
    pose = CameraPose.from_yaw((0.0, 0.0, camera_z))
    _, depth = render(scene, pose, SMALL_NYU)
    distance = scene.room_max[2] - camera_z
    # Pixels whose ray at that distance lands inside the end wall's rectangle see the end wall.
    v, u = np.mgrid[0:120, 0:160]
    x = (u - SMALL_NYU.cx) * distance / SMALL_NYU.fx
    y = (v - SMALL_NYU.cy) * distance / SMALL_NYU.fy
    on_wall = (
        (x > scene.room_min[0] + 1e-3)
        & (x < scene.room_max[0] - 1e-3)
        & (y > scene.room_min[1] + 1e-3)
        & (y < scene.room_max[1] - 1e-3)
    )
    assert on_wall.mean() > 0.2
    np.testing.assert_allclose(depth[on_wall], distance, rtol=1e-6)
    # Everything else (floor, ceiling, side walls) is nearer than the end wall.
    assert np.all(depth[~on_wall] <= distance + 1e-4)


def test_ground_plane_depth_matches_closed_form():
    scene = make_scene(SceneConfig(kind="street", seed=2, n_objects=0))
    pose = CameraPose.from_yaw(scene.path_start)
    _, depth = render(scene, pose, SMALL_KITTI)
    rows = np.arange(int(SMALL_KITTI.cy) + 1, SMALL_KITTI.height)
    expected = scene.camera_height * SMALL_KITTI.fy / (rows - SMALL_KITTI.cy)
    # Within 12 m and 20 columns of the centre, the view straight ahead is the empty ego lane.
    rows, expected = rows[expected < 12.0], expected[expected < 12.0]
    assert len(rows) > 20
    cols = np.arange(int(SMALL_KITTI.cx) - 20, int(SMALL_KITTI.cx) + 20)
    np.testing.assert_allclose(
        depth[np.ix_(rows, cols)], np.repeat(expected[:, None], len(cols), 1), rtol=1e-5
    )


def test_street_sky_has_no_depth_and_is_painted_as_sky():
    scene = make_scene(SceneConfig(kind="street", seed=0))
    pose = trajectory(scene, 3)[0]
    rgb, depth = render(scene, pose, SMALL_KITTI)
    assert depth[0, SMALL_KITTI.width // 2] == 0.0  # straight up the street: open sky
    invalid = depth == 0
    assert 0.02 < invalid.mean() < 0.6
    assert depth.max() <= scene.max_range
    # Sky is blue-ish (blue over red) and brighter towards the horizon than overhead.
    sky_top = rgb[0, SMALL_KITTI.width // 2].astype(int)
    assert sky_top[2] > sky_top[0]
    # Everything valid lies on or above the ground plane (y down: y <= ground_y).
    points = back_project(depth, SMALL_KITTI, pose)[~invalid]
    assert points[:, 1].max() <= scene.ground_y + 1e-3


def test_indoor_depth_is_dense_and_back_projects_inside_the_room():
    scene = make_scene(SceneConfig(kind="indoor", seed=5))
    poses = trajectory(scene, 4)
    for pose in poses:
        _, depth = render(scene, pose, SMALL_NYU)
        assert np.all(depth > 0)
        points = back_project(depth, SMALL_NYU, pose).reshape(-1, 3)
        assert np.all(points >= scene.room_min - 1e-3) and np.all(points <= scene.room_max + 1e-3)
        # No point lies strictly inside a box: the first hit is on a surface, not through it.
        for lo, hi in zip(scene.boxes_min, scene.boxes_max):
            inside = np.all((points > lo + 1e-3) & (points < hi - 1e-3), axis=1)
            assert not inside.any()


@pytest.mark.parametrize("kind", ["indoor", "street"])
def test_trajectory_moves_forward_smoothly_outside_obstacles(kind):
    scene = make_scene(SceneConfig(kind=kind, seed=7))
    poses = trajectory(scene, 30, yaw_amplitude_deg=4.0)
    z = np.array([p.position[2] for p in poses])
    assert np.all(np.diff(z) > 0) and z[-1] - z[0] > 1.0
    steps = np.diff(z)
    assert steps.max() < 3 * (z[-1] - z[0]) / len(steps)  # no jumps
    for pose in poses:
        forward = pose.rotation[:, 2]
        yaw = math.degrees(math.atan2(forward[0], forward[2]))
        assert abs(yaw) <= 4.0 + 1e-9
        np.testing.assert_allclose(pose.rotation @ pose.rotation.T, np.eye(3), atol=1e-12)
        inside = np.all((pose.position > scene.boxes_min) & (pose.position < scene.boxes_max), axis=1)
        assert not inside.any()


def test_render_sequence_streams_the_trajectory():
    scene = make_scene(SceneConfig(kind="indoor", seed=0))
    frames = list(render_sequence(scene, SMALL_NYU, 3))
    assert [f.index for f in frames] == [0, 1, 2]
    rgb, depth = render(scene, trajectory(scene, 3)[1], SMALL_NYU)
    np.testing.assert_array_equal(frames[1].rgb, rgb)
    np.testing.assert_array_equal(frames[1].depth, depth)


def test_intrinsics_scale_with_pixel_centres():
    small = NYU_INTRINSICS.scaled_to(160, 120, align_pixel_centres=True)
    assert small.fx == pytest.approx(518.8579 / 4)
    assert small.cx == pytest.approx((325.5824 + 0.5) / 4 - 0.5)
    back = small.scaled_to(640, 480, align_pixel_centres=True)
    assert back.cy == pytest.approx(NYU_INTRINSICS.cy)
    np.testing.assert_allclose(small.matrix()[:2, 2], [small.cx, small.cy])


def test_small_frames_render_in_milliseconds():
    scene = make_scene(SceneConfig(kind="street", seed=0))
    pose = trajectory(scene, 2)[0]
    render(scene, pose, SMALL_NYU)  # warm-up
    start = time.perf_counter()
    for _ in range(5):
        render(scene, pose, SMALL_NYU)
    per_frame = (time.perf_counter() - start) / 5
    # Typically 3-8 ms here; the bound only catches an accidental per-pixel Python loop.
    assert per_frame < 0.1
