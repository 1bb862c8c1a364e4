"""How far can a costmap trust the depth? Figures against synthetic scenes' exact depth.

Three measurements, used by the tests and printed by ``scripts/depth_quality.py`` (the tables of
docs/ros_node.md):

* flying points, without and with the flying-pixel filter (:func:`synthetic_flying_pixel_report`);
* the confidence map's sparsification curves and AUSE (:func:`sparsification_curves`,
  :func:`synthetic_confidence_report`);
* metric scale recovery by the scale anchors, and the anchored scale's frame-to-frame jitter
  (:func:`scale_recovery_report`, :func:`scale_jitter_report`).

Flying points
-------------

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

Confidence: sparsification
--------------------------

Per image, the pixels with exact depth are removed in order, a growing share at a time, and the
AbsRel of the pixels left is plotted against the share removed: in order of the confidence map
(least confident first), in the oracle's order (largest error first: the best any order can do)
and in a random order (flat, on average). The curves are averaged over the images. AUSE is the
area between the confidence curve and the oracle's (lower is better, 0 is perfect);
``ause_random`` the same area for the random order, the scale to judge AUSE by. The figure the
issue asks for is the AbsRel after removing the least-confident 20 % against a random 20 %.

Scale anchors
-------------

Each held-out frame's prediction is multiplied by a deliberately wrong factor (0.7, 1.4), then the
node's own anchor (:class:`~space_clip_ros.outputs.anchoring.DepthScaleAnchor`, one per sequence,
no smoothing) fits and applies its scale; the corrected AbsRel is compared with the AbsRel of the
prediction as it came (the "correctly scaled" one). ``sparse_points`` gets a simulated sparse
range sensor: ``anchor_points`` random pixels with exact depth, 1 % range noise, and 10 % of them
outliers at a random range. The jitter of a sequence is the standard deviation of the
frame-to-frame change of the applied scale, in percent (100 x std of the differences of ln scale).
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


# ----------------------------------------------------------------------------------------------
# Held-out synthetic frames and a predictor's depth on them

#: Scene seeds no demo or training run renders (training rooms use 0..499, test rooms 500..,
#: street drives seed * 1000 + a drive number below 60).
HELD_OUT_SEEDS: tuple[int, ...] = (701, 702, 703, 704)


@dataclass(frozen=True)
class HeldOutFrame:
    """One rendered frame with its exact depth, the camera, and what the predictor made of it."""

    rgb: np.ndarray  # (H, W, 3) uint8
    exact: np.ndarray  # (H, W) float32 metres, 0 = no depth (a street's sky)
    intrinsics: CameraIntrinsics
    camera_height: float  # of the scene: the ground-plane anchor's input
    depth: np.ndarray  # (H, W) float32 metres, the predictor's
    confidence: np.ndarray | None  # (H, W) float32, when asked for


def _predictor_size(predictor, kind: str) -> tuple[int, int]:
    """(width, height) to render at: the size the checkpoint was trained at, else a small default."""
    record = getattr(predictor, "record", None)
    if record is not None and record.train_image_size:
        height, width = record.train_image_size
        return int(width), int(height)
    return (128, 96) if kind == "indoor" else (192, 64)


def held_out_frames(
    predictor,
    kind: str = "indoor",
    seeds: tuple[int, ...] = HELD_OUT_SEEDS,
    frames_per_scene: int = 6,
    with_confidence: bool = False,
    size: tuple[int, int] | None = None,
) -> list[HeldOutFrame]:
    """Frames of held-out synthetic scenes (``data.frame_sources.SyntheticSource``, one pass of
    ``frames_per_scene`` frames per seed) at ``size`` (width, height; default: the training size
    of the predictor's checkpoint), each with the predictor's depth (and confidence)."""
    # Imported here: only the measurements render scenes.
    from space_clip_ros.data.frame_sources import SyntheticSource
    from space_clip_ros.data.synthetic import SceneConfig, make_scene

    width, height = size or _predictor_size(predictor, kind)
    frames = []
    for seed in seeds:
        source = SyntheticSource(scene_kind=kind, seed=seed, width=width, height=height,
                                 frames_per_pass=frames_per_scene, loop=False)
        camera_height = make_scene(SceneConfig(kind=kind, seed=seed)).camera_height  # the source's scene
        for frame in source:
            prediction = predictor.infer(frame.rgb[None], with_confidence=with_confidence)
            confidence = None if prediction.confidence is None else prediction.confidence[0].cpu().numpy()
            frames.append(HeldOutFrame(frame.rgb, frame.depth, source.camera.intrinsics, camera_height,
                                       prediction.depth[0].cpu().numpy(), confidence))
    return frames


def _depth_range(predictor, kind: str) -> tuple[float, float]:
    record = getattr(predictor, "record", None)
    if record is not None:
        return float(record.min_depth), float(record.max_depth)
    return (1e-3, 10.0) if kind == "indoor" else (1e-3, 80.0)


def abs_rel_map(depth: np.ndarray, exact: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """|d - d*| / d* at the pixels with exact depth in (min_depth, max_depth) (a 1-D array), the
    prediction clipped to that range first (the evaluation protocol's rule)."""
    valid = (exact > min_depth) & (exact < max_depth)
    predicted = np.clip(depth[valid], min_depth, max_depth)
    return np.abs(predicted - exact[valid]) / exact[valid]


# ----------------------------------------------------------------------------------------------
# Confidence: sparsification curves and AUSE


@dataclass(frozen=True)
class SparsificationCurves:
    """Mean AbsRel of the pixels kept after removing a share of them, in three orders (see the
    module notes), averaged over images."""

    fractions: np.ndarray  # shares removed, ascending from 0
    confidence: np.ndarray  # least confident removed first
    oracle: np.ndarray  # largest error removed first
    random: np.ndarray  # random order
    images: int
    pixels: int

    @property
    def ause(self) -> float:
        """Area between the confidence curve and the oracle's (AbsRel x share removed)."""
        return _area(self.confidence - self.oracle, self.fractions)

    @property
    def ause_random(self) -> float:
        """Area between the random order's curve and the oracle's."""
        return _area(self.random - self.oracle, self.fractions)

    def at(self, fraction: float) -> tuple[float, float, float]:
        """(confidence, oracle, random) AbsRel after removing ``fraction`` of the pixels."""
        return tuple(float(np.interp(fraction, self.fractions, curve))
                     for curve in (self.confidence, self.oracle, self.random))


def _area(values: np.ndarray, at: np.ndarray) -> float:
    """Trapezoidal integral (NumPy 1.21 has no ``trapezoid``, NumPy 2 deprecates ``trapz``)."""
    return float(np.sum(0.5 * (values[1:] + values[:-1]) * np.diff(at)))


def _kept_means(errors_in_removal_order: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Mean of the errors left after removing the first ``fraction`` of them, per fraction."""
    count = len(errors_in_removal_order)
    # Means of the tails: reverse, cumulative sums, divide.
    tail_sums = np.cumsum(errors_in_removal_order[::-1], dtype=np.float64)
    kept = np.maximum(count - np.floor(fractions * count).astype(np.int64), 1)
    return tail_sums[kept - 1] / kept


def sparsification_curves(
    errors: list[np.ndarray],
    confidences: list[np.ndarray],
    fractions: np.ndarray | None = None,
    seed: int = 0,
) -> SparsificationCurves:
    """Sparsification curves of per-pixel ``errors`` (e.g. :func:`abs_rel_map`) ranked by
    ``confidences`` (same pixels, same order), one pair of 1-D arrays per image.

    ``fractions`` default: 0, 0.02, ..., 0.98. Ties in confidence are broken by pixel order
    (stable sort); the random order is seeded.
    """
    if len(errors) != len(confidences) or not errors:
        raise ValueError("need one confidence array per error array, and at least one image")
    fractions = np.arange(0.0, 0.99, 0.02) if fractions is None else np.asarray(fractions, dtype=np.float64)
    rng = np.random.default_rng(seed)
    by_confidence, oracle, random = [], [], []
    pixels = 0
    for error, confidence in zip(errors, confidences, strict=True):
        error = np.asarray(error, dtype=np.float64).reshape(-1)
        confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if error.shape != confidence.shape:
            raise ValueError(f"errors {error.shape} and confidences {confidence.shape} differ in size")
        if error.size == 0:
            continue
        pixels += error.size
        by_confidence.append(_kept_means(error[np.argsort(confidence, kind="stable")], fractions))
        oracle.append(_kept_means(np.sort(error)[::-1], fractions))
        random.append(_kept_means(error[rng.permutation(error.size)], fractions))
    if not by_confidence:
        raise ValueError("no image has a pixel to score")
    return SparsificationCurves(fractions, np.mean(by_confidence, axis=0), np.mean(oracle, axis=0),
                                np.mean(random, axis=0), len(by_confidence), pixels)


@dataclass(frozen=True)
class ConfidenceReport:
    """The confidence map's sparsification on held-out frames, and the 20 % comparison."""

    kind: str
    curves: SparsificationCurves
    removed: float = 0.2

    @property
    def abs_rel(self) -> float:
        """Mean AbsRel of all pixels."""
        return float(self.curves.confidence[0])

    @property
    def abs_rel_without_least_confident(self) -> float:
        return self.curves.at(self.removed)[0]

    @property
    def abs_rel_without_random(self) -> float:
        return self.curves.at(self.removed)[2]

    @property
    def abs_rel_oracle(self) -> float:
        return self.curves.at(self.removed)[1]

    @property
    def gain_share(self) -> float:
        """How much of the oracle's AbsRel reduction at ``removed`` the confidence order achieves
        (1: as good as the oracle, 0: no better than random)."""
        random = self.abs_rel_without_random
        best = random - self.abs_rel_oracle
        return (random - self.abs_rel_without_least_confident) / best if best > 0 else 0.0


def confidence_report(frames: list[HeldOutFrame], min_depth: float, max_depth: float, kind: str = "",
                      removed: float = 0.2, seed: int = 0) -> ConfidenceReport:
    """:class:`ConfidenceReport` of frames that carry a confidence map."""
    errors, confidences = [], []
    for frame in frames:
        if frame.confidence is None:
            raise ValueError("held_out_frames(..., with_confidence=True) gives the confidence maps this needs")
        valid = (frame.exact > min_depth) & (frame.exact < max_depth)
        errors.append(abs_rel_map(frame.depth, frame.exact, min_depth, max_depth))
        confidences.append(frame.confidence[valid])
    return ConfidenceReport(kind, sparsification_curves(errors, confidences, seed=seed), removed)


def synthetic_confidence_report(
    predictor, kind: str = "indoor", seeds: tuple[int, ...] = HELD_OUT_SEEDS, frames_per_scene: int = 6,
    removed: float = 0.2,
) -> ConfidenceReport:
    """:func:`confidence_report` of ``predictor`` (a DepthPredictor) on held-out synthetic scenes."""
    frames = held_out_frames(predictor, kind, seeds, frames_per_scene, with_confidence=True)
    return confidence_report(frames, *_depth_range(predictor, kind), kind=kind, removed=removed)


# ----------------------------------------------------------------------------------------------
# Scale anchors: recovery of a wrong scale, jitter over a sequence


def simulated_anchor_points(
    exact: np.ndarray, intrinsics: CameraIntrinsics, count: int, rng: np.random.Generator,
    noise: float = 0.01, outlier_share: float = 0.1, max_range: float = math.inf,
) -> np.ndarray:
    """(N, 3) metric points of a simulated sparse range sensor (see the module notes)."""
    valid = np.flatnonzero((exact > 0) & (exact < max_range))
    if valid.size == 0:
        return np.empty((0, 3))
    chosen = rng.choice(valid, size=min(count, valid.size), replace=False)
    rows, cols = np.unravel_index(chosen, exact.shape)
    z = exact[rows, cols].astype(np.float64) * (1.0 + noise * rng.standard_normal(len(chosen)))
    outliers = rng.random(len(chosen)) < outlier_share
    z[outliers] = rng.uniform(0.2, 2.0 * float(exact[rows, cols].max()), size=int(outliers.sum()))
    x = (cols - intrinsics.cx) * z / intrinsics.fx
    y = (rows - intrinsics.cy) * z / intrinsics.fy
    return np.stack([x, y, z], axis=1)


def _anchor_options(anchor: str, camera_height: float, smoothing: float):
    from space_clip_ros.outputs.options import OutputOptions

    return OutputOptions(scale_anchor=anchor, camera_height=camera_height, scale_smoothing=smoothing)


def anchored_scales(
    frames: list[HeldOutFrame], anchor: str, wrong_scale: float = 1.0, smoothing: float = 0.0,
    anchor_points: int = 200, seed: int = 0,
) -> list[tuple[float, bool]]:
    """(applied scale, whether the frame had its own fit) per frame of one sequence, anchoring
    ``wrong_scale`` x each frame's predicted depth with the node's own
    :class:`~space_clip_ros.outputs.anchoring.DepthScaleAnchor`."""
    from space_clip_ros.outputs.anchoring import DepthScaleAnchor

    state = DepthScaleAnchor()
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        options = _anchor_options(anchor, frame.camera_height, smoothing)
        if anchor == "sparse_points":
            state.set_anchor_points(simulated_anchor_points(frame.exact, frame.intrinsics, anchor_points, rng))
        fit = state.fit(frame.depth * np.float32(wrong_scale), frame.intrinsics, options)
        out.append((fit.scale, fit.measured is not None))
    return out


@dataclass(frozen=True)
class ScaleRecoveryRow:
    """AbsRel of a scene kind's held-out frames: as predicted, wrongly scaled, and anchored."""

    kind: str
    anchor: str
    wrong_scale: float
    abs_rel_correct: float  # the prediction as it came
    abs_rel_wrong: float  # times wrong_scale
    abs_rel_corrected: float  # times wrong_scale, then anchored
    frames: int
    fitted_frames: int  # frames with their own fit (the others kept the previous scale)

    @property
    def relative_difference(self) -> float:
        """abs_rel_corrected / abs_rel_correct - 1 (the issue's bound: within +-10 %); NaN for exact depth."""
        return self.abs_rel_corrected / self.abs_rel_correct - 1.0 if self.abs_rel_correct > 0 else math.nan


def scale_recovery_report(
    frames: list[HeldOutFrame], min_depth: float, max_depth: float, kind: str, anchor: str,
    wrong_scales: tuple[float, ...] = (0.7, 1.4), anchor_points: int = 200,
) -> list[ScaleRecoveryRow]:
    """One :class:`ScaleRecoveryRow` per wrong scale; the frames are taken as one sequence per
    scene (the anchor state starts afresh for each wrong scale)."""

    def mean_abs_rel(factors: list[float]) -> float:
        return float(np.mean([
            abs_rel_map(f.depth * np.float32(s), f.exact, min_depth, max_depth).mean() for f, s in zip(frames, factors)
        ]))

    correct = mean_abs_rel([1.0] * len(frames))
    rows = []
    for wrong in wrong_scales:
        scales = anchored_scales(frames, anchor, wrong, anchor_points=anchor_points)
        rows.append(ScaleRecoveryRow(
            kind, anchor, wrong, correct, mean_abs_rel([wrong] * len(frames)),
            mean_abs_rel([wrong * s for s, _ in scales]), len(frames), sum(fitted for _, fitted in scales),
        ))
    return rows


@dataclass(frozen=True)
class ScaleJitterRow:
    """The applied scale over one camera sequence, with a given smoothing."""

    kind: str
    anchor: str
    smoothing: float
    frames: int
    fitted_frames: int
    jitter_percent: float  # 100 x std of the frame-to-frame differences of ln(scale), from the first fit on (NaN: < 3)
    mean_scale: float  # geometric mean of the applied scale from the first fit on (NaN: no fit)


def scale_jitter_report(
    frames: list[HeldOutFrame], kind: str, anchor: str, smoothings: tuple[float, ...] = (0.0, 0.8),
    anchor_points: int = 200,
) -> list[ScaleJitterRow]:
    """One :class:`ScaleJitterRow` per smoothing, ``frames`` taken as one sequence."""
    rows = []
    for smoothing in smoothings:
        scales = anchored_scales(frames, anchor, 1.0, smoothing, anchor_points)
        fitted = [index for index, (_, has_fit) in enumerate(scales) if has_fit]
        # From the first fit on: before it the scale is the initial 1.0, and that step is not jitter.
        values = np.log([s for s, _ in scales[fitted[0]:]]) if fitted else np.empty(0)
        jitter = 100.0 * float(np.std(np.diff(values))) if len(values) > 2 else math.nan
        mean = float(np.exp(values.mean())) if len(values) else math.nan
        rows.append(ScaleJitterRow(kind, anchor, smoothing, len(frames), len(fitted), jitter, mean))
    return rows


# ----------------------------------------------------------------------------------------------
# Flying-pixel filter on a real prediction: which points it removes


@dataclass(frozen=True)
class FlyingFilterErrors:
    """What the flying-pixel filter removes from a model's clouds, judged by exact depth.

    A trained decoder's points are off by its whole error (AbsRel 0.1-0.3 for the demo decoders),
    so :class:`FlyingPixelReport`'s "farther than 5 % from every true surface" counts most points;
    the useful question is rather whether the filter removes the *worse* points and where.
    """

    points: int  # cloud points (valid exact depth, predicted depth in range)
    removed: int  # of which the filter removes
    abs_rel_removed: float  # mean AbsRel of the removed points
    abs_rel_kept: float  # mean AbsRel of the points kept
    removed_at_true_edges: float  # share of removed points within 2 px of an exact-depth discontinuity
    pixels_at_true_edges: float  # share of all cloud points there (what a blind filter would reach)


def flying_filter_errors(
    frames: list[HeldOutFrame], flying_pixel_threshold: float, min_depth: float, max_depth: float,
    edge_threshold: float = 0.1,
) -> FlyingFilterErrors:
    """:class:`FlyingFilterErrors` of ``frames`` (their ``depth`` is the prediction); true
    discontinuities are exact-depth jumps over ``edge_threshold`` (the same relative rule)."""
    kernel = np.ones((5, 5), dtype=np.uint8)
    points = removed = 0
    removed_errors, kept_errors = [], []
    at_edges_removed = at_edges = 0
    for frame in frames:
        exact = frame.exact.astype(np.float32)
        cloud = (exact > min_depth) & (exact < max_depth) & valid_depth_mask(frame.depth, min_depth, max_depth)
        flying = flying_pixel_mask(frame.depth, flying_pixel_threshold) & cloud
        edges = cv2.dilate(flying_pixel_mask(np.where(exact > 0, exact, np.float32(np.nan)), edge_threshold)
                           .astype(np.uint8), kernel).astype(bool)
        error = np.abs(frame.depth - exact) / np.where(exact > 0, exact, np.float32(1.0))
        points += int(np.count_nonzero(cloud))
        removed += int(np.count_nonzero(flying))
        removed_errors.append(error[flying])
        kept_errors.append(error[cloud & ~flying])
        at_edges_removed += int(np.count_nonzero(flying & edges))
        at_edges += int(np.count_nonzero(cloud & edges))
    removed_all, kept_all = np.concatenate(removed_errors), np.concatenate(kept_errors)
    return FlyingFilterErrors(
        points, removed,
        float(removed_all.mean()) if removed_all.size else math.nan,
        float(kept_all.mean()) if kept_all.size else math.nan,
        at_edges_removed / removed if removed else math.nan,
        at_edges / points if points else math.nan,
    )
