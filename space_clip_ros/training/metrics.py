"""Depth evaluation metrics, crops, and their per-image aggregation (SPEC section 5).

Everything is numpy float64 except ``flip_average``, which runs the model (torch). Depth maps are
2-D ``(H, W)`` arrays in metres.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping

import cv2
import numpy as np
import torch

logger = logging.getLogger(__name__)

# Column order of the SPEC's result tables.
METRIC_NAMES: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "d1", "d2", "d3", "silog")
BOUNDARY_PREFIX = "boundary_"
BOUNDARY_METRIC_NAMES: tuple[str, ...] = tuple(BOUNDARY_PREFIX + name for name in METRIC_NAMES)

# Crop fractions of (h, w), exactly as written in BTS / AdaBins evaluation code.
GARG_CROP_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
KITTI_EIGEN_CROP_FRACTIONS = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
NYU_EIGEN_CROP = (45, 471, 41, 601)  # rows 45:471, cols 41:601 of a 480x640 map
NYU_SHAPE = (480, 640)


def _empty_metrics() -> dict[str, float]:
    return {name: math.nan for name in METRIC_NAMES}


def compute_depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    min_depth: float,
    max_depth: float,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """The nine standard metrics of one image, on pixels ``min_depth < gt < max_depth`` (and ``mask``).

    ``pred`` is clipped to ``[min_depth, max_depth]`` before scoring. ``mask`` (optional, boolean)
    restricts the pixels further, e.g. to a crop or a boundary region. Keys are ``METRIC_NAMES``:
    ``abs_rel = mean(|gt - pred| / gt)``, ``sq_rel = mean((gt - pred)^2 / gt)``, ``rmse``,
    ``rmse_log``, ``log10 = mean(|log10 gt - log10 pred|)``, ``d<k>`` = fraction with
    ``max(gt/pred, pred/gt) < 1.25^k``, ``silog = 100 * sqrt(mean(e^2) - mean(e)^2)`` with
    ``e = log pred - log gt``.

    With no valid pixel every metric is NaN: the caller (``MetricAccumulator``) skips and counts
    such images instead of letting them pull the mean.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    valid = (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        if mask.shape != gt.shape:
            raise ValueError(f"mask {mask.shape} and gt {gt.shape} must have the same shape")
        valid &= mask.astype(bool)
    if not valid.any():
        return _empty_metrics()

    p = np.clip(pred[valid], min_depth, max_depth)
    g = gt[valid]
    ratio = np.maximum(g / p, p / g)
    diff = g - p
    log_err = np.log(p) - np.log(g)
    # Rounding can push the variance a hair below 0 when all errors are equal.
    silog_var = max(float(np.mean(log_err**2) - np.mean(log_err) ** 2), 0.0)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_err**2))),
        "log10": float(np.mean(np.abs(np.log10(g) - np.log10(p)))),
        "d1": float(np.mean(ratio < 1.25)),
        "d2": float(np.mean(ratio < 1.25**2)),
        "d3": float(np.mean(ratio < 1.25**3)),
        "silog": float(100.0 * math.sqrt(silog_var)),
    }


def _fraction_crop_mask(h: int, w: int, fractions: tuple[float, float, float, float]) -> np.ndarray:
    top, bottom, left, right = fractions
    mask = np.zeros((h, w), dtype=bool)
    mask[int(top * h) : int(bottom * h), int(left * w) : int(right * w)] = True
    return mask


def garg_crop_mask(h: int, w: int) -> np.ndarray:
    """Garg crop: ``mask[int(0.40810811*h):int(0.99189189*h), int(0.03594771*w):int(0.96405229*w)]``.

    Python slicing, so the end indices are excluded (375x1242 -> rows 153..370, cols 44..1196).
    """
    return _fraction_crop_mask(h, w, GARG_CROP_FRACTIONS)


def eigen_crop_mask(h: int, w: int, dataset: str = "kitti") -> np.ndarray:
    """Eigen crop as a boolean ``(h, w)`` mask.

    KITTI: ``mask[int(0.3324324*h):int(0.91351351*h), int(0.0359477*w):int(0.96405229*w)]``
    (375x1242 -> rows 124..341, cols 44..1196). NYU: ``mask[45:471, 41:601]``, defined on 480x640
    only; any other size raises ``ValueError`` rather than guessing a scaled crop (score NYU at the
    native resolution, or use no crop).
    """
    if dataset == "kitti":
        return _fraction_crop_mask(h, w, KITTI_EIGEN_CROP_FRACTIONS)
    if dataset == "nyu":
        if (h, w) != NYU_SHAPE:
            raise ValueError(
                f"the NYU Eigen crop [45:471, 41:601] is defined on 480x640 maps, got {h}x{w}; "
                "score at the native resolution or use crop='none'"
            )
        top, bottom, left, right = NYU_EIGEN_CROP
        mask = np.zeros((h, w), dtype=bool)
        mask[top:bottom, left:right] = True
        return mask
    raise ValueError(f"unknown dataset {dataset!r} for the Eigen crop; expected 'kitti' or 'nyu'")


def median_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return ``pred * median(gt[mask]) / median(pred[mask])``.

    If the mask is empty (nothing will be scored) or ``median(pred[mask]) <= 0`` (a dead prediction,
    the ratio is undefined), ``pred`` is returned unchanged; the latter is logged as a warning.
    """
    pred = np.asarray(pred, dtype=np.float64)
    mask = mask.astype(bool)
    if not mask.any():
        return pred
    pred_median = float(np.median(pred[mask]))
    if pred_median <= 0:
        logger.warning("median scaling skipped: median prediction is %s", pred_median)
        return pred
    return pred * (float(np.median(np.asarray(gt, dtype=np.float64)[mask])) / pred_median)


def flip_average(predict_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """Mean of ``predict_fn(image)`` and the mirrored ``predict_fn`` of the mirrored image.

    ``image`` is ``(B, C, H, W)``; the prediction may have any shape whose last axis is width.
    """
    pred = predict_fn(image)
    pred_of_mirror = predict_fn(torch.flip(image, dims=(-1,)))
    return 0.5 * (pred + torch.flip(pred_of_mirror, dims=(-1,)))


def boundary_mask(gt: np.ndarray, valid: np.ndarray, threshold: float = 0.05, size: int = 7) -> np.ndarray:
    """Pixels near depth discontinuities, as a boolean mask.

    A pixel is an edge pixel when it and a 4-neighbour are both valid and their log-depths differ by
    more than ``threshold`` (both pixels of such a pair are edge pixels). Edges are dilated by a
    ``size x size`` square and intersected with ``valid`` eroded by the same square. Both use
    OpenCV's default border handling: outside the image counts neither as edge nor as invalid, so
    the image border itself does not erode the valid mask (crops and holes do).
    """
    valid = valid.astype(bool)
    log_depth = np.log(np.where(valid, np.asarray(gt, dtype=np.float64), 1.0))
    edges = np.zeros_like(valid)

    horizontal = (np.abs(log_depth[:, 1:] - log_depth[:, :-1]) > threshold) & valid[:, 1:] & valid[:, :-1]
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    vertical = (np.abs(log_depth[1:, :] - log_depth[:-1, :]) > threshold) & valid[1:, :] & valid[:-1, :]
    edges[1:, :] |= vertical
    edges[:-1, :] |= vertical

    kernel = np.ones((size, size), dtype=np.uint8)
    dilated = cv2.dilate(edges.astype(np.uint8), kernel).astype(bool)
    eroded = cv2.erode(valid.astype(np.uint8), kernel).astype(bool)
    return dilated & eroded


def boundary_depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    min_depth: float,
    max_depth: float,
    threshold: float = 0.05,
    size: int = 7,
) -> dict[str, float]:
    """The nine metrics restricted to ``boundary_mask(gt, valid)``, keys prefixed ``boundary_``.

    ``valid`` should already include the crop and the valid depth range. NaN when the image has no
    boundary pixel.
    """
    region = boundary_mask(gt, valid, threshold=threshold, size=size)
    metrics = compute_depth_metrics(pred, gt, min_depth, max_depth, mask=region)
    return {BOUNDARY_PREFIX + name: value for name, value in metrics.items()}


class MetricAccumulator:
    """Per-image mean of metric dicts, mergeable across processes.

    An image whose ``abs_rel`` is NaN (no valid pixel) is skipped and counted in ``skipped``. Within
    a scored image, a NaN metric (e.g. ``boundary_*`` of an image without boundaries) is left out of
    that metric's mean only, so each metric keeps its own count.

    For distributed evaluation, ``state_vector(keys)`` packs sums, counts, images and skipped into
    one float64 array in a fixed key order: all-reduce (sum) it across ranks and load the result
    with ``from_state_vector``. ``state()`` / ``merge()`` do the same with plain dicts.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.images = 0
        self.skipped = 0

    def add(self, metrics: Mapping[str, float]) -> bool:
        """Add one image's metrics; return False when the image was skipped (no valid pixel)."""
        if not math.isfinite(float(metrics.get("abs_rel", math.nan))):
            self.skipped += 1
            return False
        self.images += 1
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1
        return True

    def mean(self) -> dict[str, float]:
        """Per-image mean of every metric that had at least one finite value."""
        return {key: total / self.counts[key] for key, total in self.sums.items()}

    def state(self) -> dict[str, object]:
        """Plain-dict state (sums, counts, images, skipped), e.g. for ``merge`` or a gather."""
        return {
            "sums": dict(self.sums),
            "counts": dict(self.counts),
            "images": self.images,
            "skipped": self.skipped,
        }

    def merge(self, state: Mapping[str, object]) -> None:
        """Add another accumulator's ``state()`` into this one."""
        for key, value in dict(state["sums"]).items():  # type: ignore[arg-type]
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        for key, value in dict(state["counts"]).items():  # type: ignore[arg-type]
            self.counts[key] = self.counts.get(key, 0) + int(value)
        self.images += int(state["images"])  # type: ignore[arg-type]
        self.skipped += int(state["skipped"])  # type: ignore[arg-type]

    def state_vector(self, keys: Iterable[str] = METRIC_NAMES + BOUNDARY_METRIC_NAMES) -> np.ndarray:
        """``[sums(keys)..., counts(keys)..., images, skipped]`` as float64, for an all-reduce."""
        keys = tuple(keys)
        sums = [self.sums.get(k, 0.0) for k in keys]
        counts = [float(self.counts.get(k, 0)) for k in keys]
        return np.array(sums + counts + [float(self.images), float(self.skipped)], dtype=np.float64)

    @classmethod
    def from_state_vector(
        cls, vector: np.ndarray, keys: Iterable[str] = METRIC_NAMES + BOUNDARY_METRIC_NAMES
    ) -> MetricAccumulator:
        """Inverse of ``state_vector`` (use the same ``keys``); metrics with count 0 are dropped."""
        keys = tuple(keys)
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (2 * len(keys) + 2,):
            raise ValueError(f"state vector of shape {vector.shape} does not match {len(keys)} keys")
        acc = cls()
        for i, key in enumerate(keys):
            count = int(round(vector[len(keys) + i]))
            if count > 0:
                acc.sums[key] = float(vector[i])
                acc.counts[key] = count
        acc.images = int(round(vector[-2]))
        acc.skipped = int(round(vector[-1]))
        return acc
