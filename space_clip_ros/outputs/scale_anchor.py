"""Metric scale anchors for a predicted depth map: the ground plane, or sparse metric points.

A monocular network's depth is metric only as far as its training scenes resemble the robot's;
a wrong focal length, an unusual camera height or a new environment leaves it off by a roughly
constant factor. Two anchors measure that factor s (metric depth = s * predicted depth):

* :func:`scale_from_ground_plane`: the robot knows its camera's height above the floor
  (``camera_height``); the floor seen in the lower part of the image, fitted as a plane, must lie
  exactly that far from the camera centre.
* :func:`scale_from_sparse_points`: a few metric 3-D points (a sparse lidar, a stereo or VIO
  feature set) in the camera's optical frame; their z against the predicted depth at their pixels.

:class:`ScaleTracker` turns the per-frame measurements into a steady scale: it keeps the last one
through frames without a credible anchor, optionally smooths, and resets on a large jump.

All geometry is in the optical frame (x right, y down, z forward), so a level forward-looking
camera sees the floor with its upward normal along -y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from space_clip_ros.data.camera import CameraIntrinsics
from space_clip_ros.msgs.image import valid_depth_mask
from space_clip_ros.msgs.pointcloud import backproject_depth, pointcloud2_to_xyz

#: "Up" of a level, forward-looking camera in its optical frame (y points down).
OPTICAL_UP: tuple[float, float, float] = (0.0, -1.0, 0.0)

_MAX_SCORED = 200  # plausible RANSAC hypotheses scored against every point at most


# ----------------------------------------------------------------------------------------------
# Ground plane


@dataclass(frozen=True)
class GroundPlaneScale:
    """A credible ground plane in a depth map and the scale it implies.

    The plane is ``normal . p = -distance`` for points p of the unscaled depth map; ``normal`` is
    a unit vector pointing from the plane towards the camera ("up"), ``distance`` > 0 the distance
    from the camera centre to the plane in the depth map's units.
    """

    scale: float  # camera_height / distance: multiply the depth by it
    inlier_share: float  # share of the ground region's valid points on the plane
    inliers: int
    normal: np.ndarray  # (3,) float64, unit, optical frame
    distance: float
    tilt_deg: float  # angle between normal and the expected up


def scale_from_ground_plane(
    depth: np.ndarray,
    intrinsics: CameraIntrinsics,
    camera_height: float,
    *,
    ground_region: float = 0.5,
    expected_up: tuple[float, float, float] | np.ndarray = OPTICAL_UP,
    max_tilt_deg: float = 15.0,
    inlier_threshold: float = 0.03,
    min_inlier_share: float = 0.3,
    min_inliers: int = 100,
    iterations: int = 1000,
    max_points: int = 3000,
    stride: int = 2,
    seed: int = 0,
) -> GroundPlaneScale | None:
    """Fit the ground plane of ``depth`` by RANSAC and return the scale putting it at ``camera_height``.

    Args:
        depth: (H, W) predicted depth (any consistent unit); invalid pixels (NaN, +-Inf, <= 0) are
            ignored. ``intrinsics`` must describe this map's size.
        camera_height: height of the camera centre above the ground in metres (> 0).
        ground_region: the lower fraction of the image rows searched for the ground (0, 1].
        expected_up: the ground's upward normal in the optical frame when the camera is mounted
            as intended; (0, -1, 0) for a level forward-looking camera. A camera pitched down by
            an angle a sees it as (0, -cos a, -sin a).
        max_tilt_deg: a plane whose normal is farther than this from ``expected_up`` is no ground
            (a wall, a ramp, a slanted car side): it is never a candidate.
        inlier_threshold: a point is on the plane when its distance to it is at most this times
            the plane's distance from the camera. Relative, because the depth's scale is unknown;
            and apt, because a relative depth error e moves a ground point off the plane by
            e * distance, whatever its range.
        min_inlier_share, min_inliers: below either, the plane is not credible (None).
        iterations: RANSAC hypotheses (three points each).
        max_points, stride: the ground region is sampled every ``stride`` pixels and at most
            ``max_points`` of the valid samples are used (a seeded random subset).
        seed: seed of the random generator; the same inputs and seed give the same result.

    Returns:
        The plane and scale, or None when no credible ground plane is found.
    """
    if not (math.isfinite(camera_height) and camera_height > 0.0):
        raise ValueError(f"camera_height must be a finite value > 0, got {camera_height}")
    if not 0.0 < ground_region <= 1.0:
        raise ValueError(f"ground_region must be in (0, 1], got {ground_region}")
    up = np.asarray(expected_up, dtype=np.float64).reshape(3)
    if not (np.all(np.isfinite(up)) and np.linalg.norm(up) > 0.0):
        raise ValueError(f"expected_up must be a finite non-zero 3-vector, got {expected_up}")
    up = up / np.linalg.norm(up)
    min_cos = math.cos(math.radians(max_tilt_deg))
    rng = np.random.default_rng(seed)

    points = _ground_region_points(depth, intrinsics, ground_region, stride)
    if len(points) > max_points:
        points = points[rng.choice(len(points), size=max_points, replace=False)]
    if len(points) < max(3, min_inliers):
        return None

    # All hypotheses at once: the plane through three random points, oriented to face the camera.
    triples = points[rng.integers(0, len(points), size=(iterations, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    usable = lengths > 1e-12 * np.max(np.abs(triples), axis=(1, 2)) ** 2  # not collinear
    normals = normals[usable] / lengths[usable, None]
    offsets = -np.einsum("ij,ij->i", normals, triples[usable, 0])  # normal . p + offset = 0
    normals, offsets = _facing_camera(normals, offsets)
    # Plausible normal only: walls and other slanted planes never compete with the floor.
    plausible = (normals @ up >= min_cos) & (offsets > 0.0)
    # Scoring is the cost; when the ground fills the view most draws are plausible, and a couple of
    # hundred of them are plenty (the draws are random, so the first ones are as good as any).
    normals, offsets = normals[plausible][:_MAX_SCORED], offsets[plausible][:_MAX_SCORED]
    if len(normals) == 0:
        return None
    residuals = np.abs(points @ normals.T + offsets)  # (points, hypotheses)
    counts = np.count_nonzero(residuals <= inlier_threshold * offsets, axis=0)
    best = int(np.argmax(counts))

    # Least-squares refinement on the inliers, twice, the second time in half the band: what else
    # lies in the band (the foot of a wall, the lower edge of a box) is all on one side of the
    # floor and tilts the fit, and less of it is that close.
    normal, offset = normals[best], float(offsets[best])
    for band in (inlier_threshold, 0.5 * inlier_threshold):
        near = np.abs(points @ normal + offset) <= band * offset
        if np.count_nonzero(near) < 3:
            break
        normal, offset = _fit_plane(points[near])
    inliers = np.abs(points @ normal + offset) <= inlier_threshold * offset
    count = int(np.count_nonzero(inliers))
    share = count / len(points)
    cos_tilt = float(np.clip(normal @ up, -1.0, 1.0))
    if offset <= 0.0 or cos_tilt < min_cos or count < min_inliers or share < min_inlier_share:
        return None
    return GroundPlaneScale(
        scale=float(camera_height / offset),
        inlier_share=share,
        inliers=count,
        normal=normal,
        distance=float(offset),
        tilt_deg=math.degrees(math.acos(cos_tilt)),
    )


def _ground_region_points(
    depth: np.ndarray, intrinsics: CameraIntrinsics, ground_region: float, stride: int
) -> np.ndarray:
    """(N, 3) float64 valid optical-frame points of the lower ``ground_region`` of the rows."""
    grid = backproject_depth(np.asarray(depth, dtype=np.float32), intrinsics, stride)  # NaN = invalid
    first_row = int(math.floor(intrinsics.height * (1.0 - ground_region)))
    region = grid[-(-first_row // stride):].reshape(-1, 3)  # rows first_row, ... on the stride grid
    return region[np.isfinite(region).all(axis=1)].astype(np.float64)


def _facing_camera(normals: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip planes so that the camera centre is on the side the normal points to (offset > 0)."""
    sign = np.where(offsets < 0.0, -1.0, 1.0)
    return normals * sign[:, None], offsets * sign


def _fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Total least-squares plane (unit normal facing the camera, offset) through ``points``."""
    centroid = points.mean(axis=0)
    # The normal is the direction of least spread: the last right-singular vector.
    _, _, vt = np.linalg.svd(points - centroid, full_matrices=False)
    normal = vt[-1]
    offset = -float(normal @ centroid)
    if offset < 0.0:
        normal, offset = -normal, -offset
    return normal, offset


# ----------------------------------------------------------------------------------------------
# Sparse metric points


def scale_from_sparse_points(
    depth: np.ndarray,
    intrinsics: CameraIntrinsics,
    points_xyz: np.ndarray,
    *,
    outlier_threshold: float = 3.0,
    min_tolerance: float = 0.01,
    min_points: int = 5,
    max_iterations: int = 10,
) -> tuple[float, float] | None:
    """The scale s with metric z ~= s * predicted depth at the pixels of sparse metric points.

    Args:
        depth: (H, W) predicted depth; ``intrinsics`` must describe its size.
        points_xyz: (N, 3) metric points in the camera's optical frame (transform them first).
            Each is projected to its nearest pixel; points behind the camera, outside the image,
            non-finite or over a pixel without a valid depth are not used.
        outlier_threshold: a point is an outlier when its log ratio log(z / depth) is more than
            this many robust standard deviations (1.4826 MAD) from the median.
        min_tolerance: the outlier band is never narrower than this (in log ratio, about a
            fraction): keeps near-exact inputs, whose MAD is ~0, from rejecting good points.
        min_points: fewer usable points (or inliers) than this gives None.
        max_iterations: median / reject rounds; stops earlier once the inlier set is stable.

    Returns:
        (scale, inlier_share), the share counted over the usable points; or None.
    """
    points = np.asarray(points_xyz, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points_xyz must be an (N, 3) array, got shape {points.shape}")
    depth = np.asarray(depth)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(
            f"intrinsics are for {intrinsics.width}x{intrinsics.height} but the depth map is "
            f"{depth.shape[1]}x{depth.shape[0]}"
        )
    points = points[np.isfinite(points).all(axis=1) & (points[:, 2] > 0.0)]
    u = np.rint(intrinsics.fx * points[:, 0] / points[:, 2] + intrinsics.cx)
    v = np.rint(intrinsics.fy * points[:, 1] / points[:, 2] + intrinsics.cy)
    inside = (u >= 0) & (u < intrinsics.width) & (v >= 0) & (v < intrinsics.height)
    predicted = depth[v[inside].astype(np.intp), u[inside].astype(np.intp)].astype(np.float64)
    usable = valid_depth_mask(predicted)
    if np.count_nonzero(usable) < min_points:
        return None
    # Log ratios: the scale is a factor, so too high and too low by the same factor weigh the same.
    log_ratio = np.log(points[inside][usable, 2] / predicted[usable])

    inliers = np.ones(len(log_ratio), dtype=bool)
    for _ in range(max_iterations):
        centre = np.median(log_ratio[inliers])
        spread = 1.4826 * np.median(np.abs(log_ratio[inliers] - centre))
        updated = np.abs(log_ratio - centre) <= max(outlier_threshold * spread, min_tolerance)
        if np.count_nonzero(updated) < min_points:
            return None
        if np.array_equal(updated, inliers):
            break
        inliers = updated
    # The mean of the inliers' log ratios: once outliers are gone it is less noisy than the median.
    return float(np.exp(np.mean(log_ratio[inliers]))), float(np.count_nonzero(inliers) / len(log_ratio))


def sparse_points_from_cloud(msg) -> np.ndarray:
    """The finite points of a sensor_msgs/PointCloud2 as (N, 3) float32 (``msgs`` reader).

    The points must already be in the depth camera's optical frame for
    :func:`scale_from_sparse_points`; this does no transform.
    """
    return pointcloud2_to_xyz(msg, skip_nans=True)


# ----------------------------------------------------------------------------------------------
# Tracking


class ScaleTracker:
    """The scale to apply frame after frame, from per-frame anchor measurements.

    * A frame without a credible measurement (None) keeps the previous scale.
    * ``scale_smoothing`` in [0, 1): exponential smoothing, new = a * old + (1 - a) * measured;
      0 takes every measurement as is.
    * A measurement more than ``scale_reset_ratio`` times away from the current scale (either
      way) is a jump, not noise (another floor, a restarted model): once ``scale_reset_frames``
      consecutive frames agree on jumping, the tracker takes the latest measurement as is rather
      than crawling there through the smoothing. Jumping frames before that keep the scale.
    * Before the first measurement the scale is ``initial_scale``; the first one is taken as is.
    """

    def __init__(
        self,
        scale_smoothing: float = 0.0,
        scale_reset_ratio: float = 1.5,
        scale_reset_frames: int = 1,
        initial_scale: float = 1.0,
    ) -> None:
        if not 0.0 <= scale_smoothing < 1.0:
            raise ValueError(f"scale_smoothing must be in [0, 1), got {scale_smoothing}")
        if not scale_reset_ratio > 1.0:
            raise ValueError(f"scale_reset_ratio must be > 1, got {scale_reset_ratio}")
        if scale_reset_frames < 1:
            raise ValueError(f"scale_reset_frames must be >= 1, got {scale_reset_frames}")
        if not (math.isfinite(initial_scale) and initial_scale > 0.0):
            raise ValueError(f"initial_scale must be a finite value > 0, got {initial_scale}")
        self.scale_smoothing = float(scale_smoothing)
        self.scale_reset_ratio = float(scale_reset_ratio)
        self.scale_reset_frames = int(scale_reset_frames)
        self.initial_scale = float(initial_scale)
        self.reset()

    def reset(self) -> None:
        """Forget every measurement: back to ``initial_scale``."""
        self._scale = self.initial_scale
        self._measured = False
        self._jumps = 0

    @property
    def scale(self) -> float:
        """The current scale."""
        return self._scale

    @property
    def has_measurement(self) -> bool:
        """Whether any credible measurement has been seen since the start (or the last reset)."""
        return self._measured

    def update(self, measured: float | None) -> float:
        """Feed one frame's measurement (None or a non-positive / non-finite value: none) and
        return the scale to apply to this frame."""
        if measured is None or not (math.isfinite(measured) and measured > 0.0):
            return self._scale
        if not self._measured:
            self._scale, self._measured = float(measured), True
            return self._scale
        ratio = measured / self._scale
        if max(ratio, 1.0 / ratio) > self.scale_reset_ratio:
            self._jumps += 1
            if self._jumps >= self.scale_reset_frames:
                self._scale, self._jumps = float(measured), 0
            return self._scale
        self._jumps = 0
        a = self.scale_smoothing
        self._scale = a * self._scale + (1.0 - a) * float(measured)
        return self._scale
