"""How clean is a predicted cloud? Flying-point figures against a scene's exact depth.

Used by the tests, and callable from the demo or the docs to print the figures:

    >>> from space_clip_ros.outputs.quality import synthetic_flying_pixel_report
    >>> report = synthetic_flying_pixel_report("street", seed=0, flying_pixel_threshold=0.04)
    >>> report.flying_share, report.flying_share_filtered, report.correct_lost_share

What counts as a flying point: a cloud point (a predicted depth in [min_depth, max_depth],
back-projected) farther than ``tolerance`` times its range from every true surface. The true
surfaces are known only through the exact depth map, i.e. as one 3-D sample per pixel, so "every
true surface" is approximated by the exact samples of the pixels within ``search_radius`` of the
point's own pixel. A point smeared across an edge lies on its own pixel's ray between the two
surfaces meeting there; both surfaces are sampled a few pixels away, so a window a little wider
than the smear finds the nearer one, which is what "distance to the nearest true surface" means.
The approximation can only over-count: a surface seen outside the window, or hidden behind
another in the exact map, is missed; and between samples a grazing surface (spaced far apart in
3-D) reads farther than it is. A point whose depth equals the exact depth of its pixel is at
distance 0, so exact depth has no flying points by construction.

Prediction stand-in: without a trained model, :func:`smear_depth_edges` imitates how a network's
output smears discontinuities: it predicts at a lower resolution and is bilinearly upsampled, so an
edge becomes a ramp a few output pixels wide. That is done here to the exact depth (area
downsampling by ``smear_factor``, then bilinear upsampling back), which keeps the depth of smooth
surfaces nearly exact and puts every error at the discontinuities, where the filter acts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from space_clip_ros.data.camera import CameraIntrinsics
from space_clip_ros.msgs.image import valid_depth_mask
from space_clip_ros.msgs.pointcloud import backproject_depth, masked_depth
from space_clip_ros.outputs.flying_pixels import flying_pixel_mask


@dataclass(frozen=True)
class FlyingPixelReport:
    """Flying points of one predicted cloud, without and with the flying-pixel filter."""

    points: int  # cloud points without the filter
    flying: int  # of which flying (farther than the tolerance from every true surface)
    points_filtered: int  # cloud points the filter keeps
    flying_filtered: int  # of which flying
    correct: int  # non-flying points without the filter
    correct_lost: int  # of which the filter removes

    @property
    def flying_share(self) -> float:
        """Share of the unfiltered cloud's points that are flying."""
        return self.flying / self.points if self.points else 0.0

    @property
    def flying_share_filtered(self) -> float:
        """Share of the filtered cloud's points that are flying."""
        return self.flying_filtered / self.points_filtered if self.points_filtered else 0.0

    @property
    def reduction(self) -> float:
        """How many times smaller the flying share is with the filter (inf when none remain)."""
        if self.flying_share_filtered == 0.0:
            return math.inf if self.flying_share > 0.0 else 1.0
        return self.flying_share / self.flying_share_filtered

    @property
    def correct_lost_share(self) -> float:
        """Share of the correct (non-flying) points that the filter removes."""
        return self.correct_lost / self.correct if self.correct else 0.0


def smear_depth_edges(depth: np.ndarray, smear_factor: int = 4, fill_depth: float | None = None) -> np.ndarray:
    """A stand-in for a network's prediction of ``depth``: exact on smooth surfaces, smeared at edges.

    The map is area-downsampled by ``smear_factor`` and bilinearly upsampled back to its size, as a
    decoder's low-resolution output is. Pixels without a depth (a street scene's sky, 0) are first
    filled with ``fill_depth`` (default: 1.5 times the largest valid depth), since a network
    predicts "far" there rather than nothing; keep the filled value beyond the cloud's max_depth.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if smear_factor < 1:
        raise ValueError(f"smear_factor must be >= 1, got {smear_factor}")
    valid = valid_depth_mask(depth)
    if not valid.any():
        raise ValueError("the depth map has no valid pixel to smear")
    fill = 1.5 * float(depth[valid].max()) if fill_depth is None else float(fill_depth)
    filled = np.where(valid, depth, np.float32(fill))
    if smear_factor == 1:
        return filled
    height, width = depth.shape
    small = cv2.resize(
        filled, (max(1, round(width / smear_factor)), max(1, round(height / smear_factor))),
        interpolation=cv2.INTER_AREA,
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def flying_point_mask(
    predicted: np.ndarray,
    exact: np.ndarray,
    intrinsics: CameraIntrinsics,
    tolerance: float = 0.05,
    search_radius: int = 5,
) -> np.ndarray:
    """(H, W) bool: pixels of ``predicted`` whose point is farther than ``tolerance`` x its range
    from every exact-depth point within ``search_radius`` pixels (see the module notes).

    Pass the predicted depth as the cloud sees it: a pixel without a valid depth (NaN, +-Inf,
    <= 0) makes no point and is never flying.
    """
    points = backproject_depth(np.asarray(predicted, dtype=np.float32), intrinsics)  # NaN = no point
    truth = backproject_depth(np.asarray(exact, dtype=np.float32), intrinsics)
    r = int(search_radius)
    height, width = points.shape[:2]
    padded = np.pad(truth, ((r, r), (r, r), (0, 0)), constant_values=np.nan)
    nearest_sq = np.full((height, width), np.inf, dtype=np.float32)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            offset = points - padded[dy : dy + height, dx : dx + width]
            np.fmin(nearest_sq, np.einsum("hwc,hwc->hw", offset, offset), out=nearest_sq)  # fmin skips NaN
    range_sq = np.einsum("hwc,hwc->hw", points, points)
    with np.errstate(invalid="ignore"):
        near = nearest_sq <= np.float32(tolerance**2) * range_sq
    return np.isfinite(range_sq) & ~near


def measure_flying_pixels(
    predicted: np.ndarray,
    exact: np.ndarray,
    intrinsics: CameraIntrinsics,
    flying_pixel_threshold: float,
    *,
    connectivity: int = 8,
    min_depth: float = 0.0,
    max_depth: float = math.inf,
    tolerance: float = 0.05,
    search_radius: int = 5,
) -> FlyingPixelReport:
    """Flying points of the cloud of ``predicted`` against ``exact`` depth, without and with
    :func:`~space_clip_ros.outputs.flying_pixels.flying_pixel_mask` (same parameters as the node).

    The cloud is every pixel with a predicted depth in [min_depth, max_depth] (the node's rule);
    the filter sees the whole prediction, range not yet applied, so that a ramp running out of
    the range (an object's edge against the sky) is still caught at its in-range end.
    """
    predicted = np.asarray(predicted, dtype=np.float32)
    in_cloud, cloud = masked_depth(predicted, min_depth, max_depth)
    flying = flying_point_mask(in_cloud, exact, intrinsics, tolerance, search_radius)
    removed = flying_pixel_mask(predicted, flying_pixel_threshold, connectivity) & cloud
    kept = cloud & ~removed
    correct = cloud & ~flying
    return FlyingPixelReport(
        points=int(np.count_nonzero(cloud)),
        flying=int(np.count_nonzero(flying)),
        points_filtered=int(np.count_nonzero(kept)),
        flying_filtered=int(np.count_nonzero(flying & kept)),
        correct=int(np.count_nonzero(correct)),
        correct_lost=int(np.count_nonzero(correct & removed)),
    )


def synthetic_flying_pixel_report(
    kind: str = "indoor",
    seed: int = 0,
    flying_pixel_threshold: float = 0.04,
    *,
    connectivity: int = 8,
    smear_factor: int = 4,
    frame: int = 1,
    tolerance: float = 0.05,
    search_radius: int = 5,
) -> FlyingPixelReport:
    """:func:`measure_flying_pixels` on one frame of a synthetic scene (``data.synthetic``).

    ``indoor`` renders at NYU's 640x480 intrinsics, ``street`` at KITTI's scaled to 640x194; the
    prediction is :func:`smear_depth_edges` of the exact depth, the cloud range the scene's.
    """
    # Imported here: the renderer is only needed for this synthetic measurement.
    from space_clip_ros.data.synthetic import (
        KITTI_INTRINSICS,
        NYU_INTRINSICS,
        SceneConfig,
        make_scene,
        render,
        trajectory,
    )

    if kind == "indoor":
        intrinsics = NYU_INTRINSICS
    elif kind == "street":
        intrinsics = KITTI_INTRINSICS.scaled_to(640, round(640 * KITTI_INTRINSICS.height / KITTI_INTRINSICS.width))
    else:
        raise ValueError(f"unknown scene kind {kind!r}; expected 'indoor' or 'street'")
    scene = make_scene(SceneConfig(kind=kind, seed=seed))
    pose = trajectory(scene, max(frame + 1, 2))[frame]
    _, exact = render(scene, pose, intrinsics)
    max_depth = scene.max_range if math.isfinite(scene.max_range) else float(exact.max())
    predicted = smear_depth_edges(exact, smear_factor, fill_depth=1.5 * max_depth)
    return measure_flying_pixels(
        predicted,
        exact,
        intrinsics,
        flying_pixel_threshold,
        connectivity=connectivity,
        max_depth=max_depth,
        tolerance=tolerance,
        search_radius=search_radius,
    )
