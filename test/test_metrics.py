"""Evaluation metrics, crops, median scaling, flip averaging, boundary region, accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from space_clip_ros.training.metrics import (
    BOUNDARY_METRIC_NAMES,
    METRIC_NAMES,
    MetricAccumulator,
    boundary_depth_metrics,
    boundary_mask,
    compute_depth_metrics,
    eigen_crop_mask,
    flip_average,
    garg_crop_mask,
    median_scale,
)

LN2 = math.log(2.0)


def test_nine_metrics_on_powers_of_two():
    # pixels (gt, pred): (1,1) (2,4) (4,2) (8,8)
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = np.array([[1.0, 4.0], [2.0, 8.0]])
    m = compute_depth_metrics(pred, gt, 0.1, 10.0)
    assert tuple(m) == METRIC_NAMES
    # |gt-pred|/gt = 0, 2/2, 2/4, 0 -> 1.5 / 4
    assert m["abs_rel"] == pytest.approx(0.375)
    # (gt-pred)^2/gt = 0, 4/2, 4/4, 0 -> 3 / 4
    assert m["sq_rel"] == pytest.approx(0.75)
    # sqrt((0 + 4 + 4 + 0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(2.0))
    # e = log pred - log gt = 0, ln2, -ln2, 0; sqrt(mean e^2) = sqrt(2 ln2^2 / 4) = ln2 / sqrt2
    assert m["rmse_log"] == pytest.approx(LN2 / math.sqrt(2.0))
    # |log10 ratio| = 0, log10 2, log10 2, 0 -> log10(2) / 2
    assert m["log10"] == pytest.approx(math.log10(2.0) / 2.0)
    # mean e = 0, so silog = 100 * sqrt(ln2^2 / 2) = 49.0129
    assert m["silog"] == pytest.approx(100.0 * LN2 / math.sqrt(2.0))
    assert m["silog"] == pytest.approx(49.0129, abs=1e-4)
    # ratios 1, 2, 2, 1: only the two exact pixels are below 1.25^3 = 1.953
    assert (m["d1"], m["d2"], m["d3"]) == (0.5, 0.5, 0.5)


def test_delta_thresholds_separate():
    # ratios max(gt/pred, pred/gt): 1, 7/5 = 1.4, 17/10 = 1.7, 5/2 = 2.5
    # 1.25 -> {1}; 1.5625 -> {1, 1.4}; 1.953125 -> {1, 1.4, 1.7}
    gt = np.array([[1.0, 5.0], [10.0, 2.0]])
    pred = np.array([[1.0, 7.0], [17.0, 5.0]])
    m = compute_depth_metrics(pred, gt, 0.1, 80.0)
    assert (m["d1"], m["d2"], m["d3"]) == (0.25, 0.5, 0.75)


def test_silog_removes_a_global_scale():
    gt = np.array([[1.0, 2.0], [3.0, 5.0]])
    m = compute_depth_metrics(3.0 * gt, gt, 0.1, 80.0)
    # e = ln 3 everywhere: variance 0
    assert m["silog"] == pytest.approx(0.0, abs=1e-6)
    assert m["abs_rel"] == pytest.approx(2.0)


def test_prediction_clipped_and_range_strict():
    # min 0.5, max 10: gt 10 (== max) and 0.5 (== min) are excluded (strict), leaving gt 1 and 4.
    gt = np.array([[1.0, 4.0], [10.0, 0.5]])
    # pred 0 -> 0.5 and 100 -> 10 after clipping
    pred = np.array([[0.0, 100.0], [10.0, 0.5]])
    m = compute_depth_metrics(pred, gt, 0.5, 10.0)
    # |1 - 0.5| / 1 = 0.5, |4 - 10| / 4 = 1.5 -> mean 1.0
    assert m["abs_rel"] == pytest.approx(1.0)
    # sqrt((0.25 + 36) / 2)
    assert m["rmse"] == pytest.approx(math.sqrt(36.25 / 2.0))
    assert all(math.isfinite(v) for v in m.values())


def test_extra_mask_restricts_pixels():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = np.array([[1.0, 4.0], [2.0, 8.0]])
    mask = np.array([[True, True], [False, False]])
    # remaining (1,1), (2,4): abs_rel = (0 + 1) / 2
    assert compute_depth_metrics(pred, gt, 0.1, 10.0, mask=mask)["abs_rel"] == pytest.approx(0.5)


def test_empty_mask_gives_nan():
    gt = np.zeros((3, 3))
    m = compute_depth_metrics(np.ones((3, 3)), gt, 0.1, 10.0)
    assert set(m) == set(METRIC_NAMES)
    assert all(math.isnan(v) for v in m.values())


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


def test_garg_crop_kitti_size():
    mask = garg_crop_mask(375, 1242)
    # int(0.40810811*375 = 153.04) = 153, int(0.99189189*375 = 371.96) = 371 (exclusive)
    # int(0.03594771*1242 = 44.65) = 44, int(0.96405229*1242 = 1197.35) = 1197 (exclusive)
    assert _bounds(mask) == (153, 370, 44, 1196)
    assert mask.sum() == (371 - 153) * (1197 - 44)


def test_eigen_crop_kitti_size():
    mask = eigen_crop_mask(375, 1242, dataset="kitti")
    # int(0.3324324*375 = 124.66) = 124, int(0.91351351*375 = 342.57) = 342; cols as Garg
    assert _bounds(mask) == (124, 341, 44, 1196)
    assert mask.sum() == (342 - 124) * (1197 - 44)


def test_fraction_crops_on_480x640():
    # Garg: 195.89 -> 195, 476.11 -> 476, 23.0065 -> 23, 616.99 -> 616
    assert _bounds(garg_crop_mask(480, 640)) == (195, 475, 23, 615)
    # KITTI Eigen: 159.57 -> 159, 438.49 -> 438
    assert _bounds(eigen_crop_mask(480, 640, dataset="kitti")) == (159, 437, 23, 615)


def test_eigen_crop_nyu():
    mask = eigen_crop_mask(480, 640, dataset="nyu")
    assert _bounds(mask) == (45, 470, 41, 600)
    assert mask.sum() == 426 * 560
    with pytest.raises(ValueError, match="480x640"):
        eigen_crop_mask(375, 1242, dataset="nyu")
    with pytest.raises(ValueError, match="unknown dataset"):
        eigen_crop_mask(480, 640, dataset="sun")


def test_median_scaling_matches_medians():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    gt = np.array([[2.0, 4.0], [6.0, 100.0]])
    mask = np.ones((2, 2), dtype=bool)
    # median gt = (4 + 6) / 2 = 5, median pred = 2.5 -> factor 2
    scaled = median_scale(pred, gt, mask)
    np.testing.assert_allclose(scaled, [[2.0, 4.0], [6.0, 8.0]])
    assert np.median(scaled) == np.median(gt)
    # only masked pixels count: gt {2, 4}, pred {1, 2} -> factor 2 again, but from other pixels
    top = np.array([[True, True], [False, False]])
    np.testing.assert_allclose(median_scale(pred, gt * np.array([[1, 1], [9, 9]]), top), 2 * pred)


def test_median_scaling_empty_mask_is_identity():
    pred = np.array([[1.0, 2.0]])
    np.testing.assert_array_equal(median_scale(pred, pred, np.zeros((1, 2), dtype=bool)), pred)


def test_flip_average_of_asymmetric_function():
    ramp = torch.tensor([0.0, 1.0, 2.0])

    def predict(x: torch.Tensor) -> torch.Tensor:
        return x + ramp  # depends on the column, so it is not mirror-symmetric

    image = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    # f(x) = [1, 3, 5]; f(flip x) = [3, 2, 1] + [0, 1, 2] = [3, 3, 3], flipped back [3, 3, 3]
    # mean: [2, 3, 4]
    out = flip_average(predict, image)
    torch.testing.assert_close(out, torch.tensor([2.0, 3.0, 4.0]).reshape(1, 1, 1, 3))


def _step_edge() -> tuple[np.ndarray, np.ndarray]:
    # 20x20, depth 1 m left of column 10 and 2 m from column 10; rows 0-1 have no ground truth.
    gt = np.ones((20, 20))
    gt[:, 10:] = 2.0
    gt[:2, :] = 0.0
    return gt, gt > 0


def test_boundary_mask_on_step_edge():
    gt, valid = _step_edge()
    region = boundary_mask(gt, valid, threshold=0.05, size=7)
    # edge pixels: columns 9 and 10 (|ln 2| > 0.05), rows 2..19 (both pixels valid);
    # dilated by 7x7: columns 6..13, rows 0..19.
    # valid eroded by 7x7: rows 2..4 are within 3 of the invalid row 1 -> rows 5..19 remain
    # (the image border does not erode). Region: rows 5..19 x cols 6..13 = 15 * 8 = 120.
    assert region.sum() == 120
    expected = np.zeros((20, 20), dtype=bool)
    expected[5:20, 6:14] = True
    np.testing.assert_array_equal(region, expected)


def test_boundary_mask_ignores_small_steps_and_invalid_neighbours():
    gt = np.ones((12, 12))
    gt[:, 6:] = 1.04  # ln 1.04 = 0.039 < 0.05
    assert not boundary_mask(gt, gt > 0).any()
    # a hole next to valid pixels is not an edge (both pixels must be valid)
    gt = np.ones((12, 12))
    gt[:, 6:] = 0.0
    assert not boundary_mask(gt, gt > 0).any()


def test_boundary_metrics_keys_and_values():
    gt, valid = _step_edge()
    pred = gt.copy()
    pred[:, 6:14] = 1.5  # wrong only inside the boundary band
    m = boundary_depth_metrics(pred, gt, valid, 0.1, 10.0)
    assert tuple(m) == BOUNDARY_METRIC_NAMES
    # in the region: 4 columns of gt 1 vs 1.5 (0.5) and 4 of gt 2 vs 1.5 (0.25) -> 0.375
    assert m["boundary_abs_rel"] == pytest.approx(0.375)
    no_edges = boundary_depth_metrics(np.ones((9, 9)), np.ones((9, 9)), np.ones((9, 9), bool), 0.1, 10.0)
    assert math.isnan(no_edges["boundary_rmse"])


def test_accumulator_mean_skip_and_merge():
    a = MetricAccumulator()
    assert a.add({"abs_rel": 0.1, "rmse": 1.0, "boundary_abs_rel": 0.4})
    assert a.add({"abs_rel": 0.3, "rmse": 3.0, "boundary_abs_rel": math.nan})
    assert not a.add({"abs_rel": math.nan, "rmse": math.nan})
    mean = a.mean()
    assert mean["abs_rel"] == pytest.approx(0.2)
    assert mean["rmse"] == pytest.approx(2.0)
    assert mean["boundary_abs_rel"] == pytest.approx(0.4)  # the NaN image does not count here
    assert (a.images, a.skipped) == (2, 1)

    b = MetricAccumulator()
    b.add({"abs_rel": 0.5, "rmse": 5.0, "boundary_abs_rel": 0.1})
    merged = MetricAccumulator()
    merged.merge(a.state())
    merged.merge(b.state())
    # abs_rel (0.1 + 0.3 + 0.5) / 3; boundary (0.4 + 0.1) / 2
    assert merged.mean()["abs_rel"] == pytest.approx(0.3)
    assert merged.mean()["boundary_abs_rel"] == pytest.approx(0.25)
    assert (merged.images, merged.skipped) == (3, 1)

    # the all-reduce path: summing the state vectors gives the same result
    reduced = MetricAccumulator.from_state_vector(a.state_vector() + b.state_vector())
    assert reduced.mean() == pytest.approx({"abs_rel": 0.3, "rmse": 3.0, "boundary_abs_rel": 0.25})
    assert (reduced.images, reduced.skipped) == (3, 1)
    with pytest.raises(ValueError):
        MetricAccumulator.from_state_vector(np.zeros(3))
