"""Evaluation protocols (presets, resolution handling, per-image scoring) and report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from space_clip_ros.training.metrics import BOUNDARY_METRIC_NAMES, METRIC_NAMES, MetricAccumulator
from space_clip_ros.training.protocol import (
    EvalProtocol,
    evaluate_prediction,
    get_protocol,
    prediction_size,
    protocol_names,
    resize_bilinear,
    resize_nearest,
)
from space_clip_ros.training.report import write_report


def test_presets():
    assert set(protocol_names()) >= {
        "kitti_eigen",
        "kitti_garg",
        "nyu_eigen",
        "nyu_release",
        "kitti_release",
        "custom",
    }
    kitti = get_protocol("kitti_eigen")
    assert (kitti.dataset, kitti.max_depth_eval, kitti.crop, kitti.resolution) == (
        "kitti",
        80.0,
        "eigen",
        "native",
    )
    assert get_protocol("kitti_garg").crop == "garg"
    nyu = get_protocol("nyu_eigen")
    assert (nyu.min_depth_eval, nyu.max_depth_eval, nyu.crop) == (1e-3, 10.0, "eigen")
    assert nyu.flip and not nyu.median_scaling and nyu.resolution == "native"
    nyu_release = get_protocol("nyu_release")
    assert (nyu_release.crop, nyu_release.resolution, nyu_release.train_size) == (
        "none",
        "release",
        (480, 640),
    )
    assert get_protocol("kitti_release").train_size == (352, 704)


def test_get_protocol_errors_and_overrides():
    with pytest.raises(ValueError, match="kitti_eigen") as info:
        get_protocol("kitti")
    assert "nyu_release" in str(info.value)
    custom = get_protocol("custom", max_depth_eval=20.0, flip=True, train_size=[10, 20], resolution="release")
    assert custom.max_depth_eval == 20.0 and custom.flip and custom.train_size == (10, 20)
    assert get_protocol("custom").max_depth_eval == 80.0  # presets are not mutated
    with pytest.raises(ValueError, match="crop"):
        get_protocol("kitti_eigen", crop="center")
    with pytest.raises(ValueError, match="unknown protocol field"):
        get_protocol("kitti_eigen", cap=10)
    with pytest.raises(ValueError, match="train_size"):
        EvalProtocol(name="x", dataset="kitti", min_depth_eval=0.1, max_depth_eval=80, resolution="release")


def test_describe_names_the_choices():
    text = get_protocol("nyu_eigen").describe()
    for phrase in ("native resolution", "45:471, 41:601", "flip averaging", "no median scaling", "< gt < 10"):
        assert phrase in text
    release = get_protocol("kitti_release").describe()
    assert "352x704" in release and "nearest" in release


def test_prediction_size():
    assert prediction_size((375, 1242), get_protocol("kitti_eigen")) == (375, 1242)
    assert prediction_size((1, 375, 1242), get_protocol("kitti_release")) == (352, 704)


def test_resize_nearest_indices():
    gt = np.arange(24, dtype=np.float64).reshape(4, 6)
    # rows floor(i * 4/2) = 0, 2; cols floor(j * 6/3) = 0, 2, 4
    np.testing.assert_array_equal(resize_nearest(gt, (2, 3)), [[0, 2, 4], [12, 14, 16]])
    # same convention as torch 'nearest', also for non-integer ratios
    src = np.random.default_rng(0).random((375, 1242))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(src)[None, None], size=(352, 704), mode="nearest"
    )
    np.testing.assert_array_equal(resize_nearest(src, (352, 704)), expected[0, 0].numpy())


def test_resize_bilinear_hand_and_torch():
    # 1x2 -> 1x4: half-pixel centres at src x = -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped to col 1)
    # values 0, 0.25 * 4, 0.75 * 4, 4
    np.testing.assert_allclose(resize_bilinear(np.array([[0.0, 4.0]]), (1, 4)), [[0.0, 1.0, 3.0, 4.0]])
    src = np.random.default_rng(1).random((5, 7))
    for size in [(3, 4), (11, 13)]:
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(src)[None, None], size=size, mode="bilinear", align_corners=False
        )
        np.testing.assert_allclose(resize_bilinear(src, size), expected[0, 0].numpy(), rtol=1e-12)


def test_release_resolution_scores_at_train_size():
    gt = np.arange(1, 25, dtype=np.float64).reshape(4, 6)
    protocol = get_protocol("custom", resolution="release", train_size=(2, 3))
    assert prediction_size(gt.shape, protocol) == (2, 3)
    # the GT is resized nearest to [[1, 3, 5], [13, 15, 17]]: a prediction equal to it is perfect
    pred = np.array([[1.0, 3.0, 5.0], [13.0, 15.0, 17.0]])
    m = evaluate_prediction(pred, gt, protocol)
    assert m["abs_rel"] == 0.0 and m["d1"] == 1.0
    # native scoring of the same prediction upsamples it to 4x6 and is no longer exact
    assert evaluate_prediction(pred, gt, get_protocol("custom"))["abs_rel"] > 0.01


def test_native_resolution_resizes_prediction():
    gt = np.full((6, 8), 3.0)
    gt[0, 0] = 0.0  # one pixel without ground truth
    m = evaluate_prediction(np.full((1, 3, 4), 6.0), gt, get_protocol("custom"))
    # constant prediction 6 vs gt 3 on 47 valid pixels: abs_rel = 1, rmse = 3
    assert m["abs_rel"] == pytest.approx(1.0) and m["rmse"] == pytest.approx(3.0)
    assert set(m) == set(METRIC_NAMES)


def test_nyu_eigen_crop_range_and_boundary():
    gt = np.full((480, 640), 2.0)
    gt[100, 100] = 12.0  # beyond the 10 m cap: not scored
    pred = np.full((480, 640), 9.0)
    pred[45:471, 41:601] = 2.0  # exact inside the crop, wrong outside
    m = evaluate_prediction(pred, gt, get_protocol("nyu_eigen"))
    assert m["abs_rel"] == 0.0 and m["rmse"] == 0.0
    assert set(m) == set(METRIC_NAMES) | set(BOUNDARY_METRIC_NAMES)
    # flat ground truth (the 12 m pixel is invalid, so no valid pair straddles it): no boundary
    assert math.isnan(m["boundary_abs_rel"])
    assert evaluate_prediction(pred, gt, get_protocol("nyu_eigen", crop="none"))["abs_rel"] > 0.1


def test_median_scaling_in_protocol_and_empty_image():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = 0.25 * gt
    assert evaluate_prediction(pred, gt, get_protocol("custom"))["abs_rel"] == pytest.approx(0.75)
    assert evaluate_prediction(pred, gt, get_protocol("custom", median_scaling=True))[
        "abs_rel"
    ] == pytest.approx(0.0, abs=1e-12)
    empty = evaluate_prediction(pred, np.zeros((2, 2)), get_protocol("custom"))
    assert all(math.isnan(v) for v in empty.values())


def test_report_files(tmp_path):
    protocol = get_protocol("nyu_eigen")
    per_image = [
        {"image": "a.png", "abs_rel": 0.1, "rmse": 0.4, "boundary_abs_rel": 0.2},
        {"image": "b.png", "abs_rel": math.nan, "rmse": math.nan},
    ]
    acc = MetricAccumulator()
    for entry in per_image:
        acc.add({k: v for k, v in entry.items() if k != "image"})
    json_path, md_path = write_report(
        tmp_path / "eval", per_image, acc.mean(), protocol, {"checkpoint": "ckpt.pt", "dataset": "nyu"}
    )
    assert json_path.name == "eval_nyu_eigen.json" and md_path.name == "eval_nyu_eigen.md"

    record = json.loads(json_path.read_text())
    assert record["protocol"]["name"] == "nyu_eigen" and record["protocol"]["crop"] == "eigen"
    assert record["protocol"]["description"] == protocol.describe()
    assert record["meta"]["checkpoint"] == "ckpt.pt"
    assert record["counts"] == {"images_scored": 1, "images_skipped": 1}
    assert record["aggregate"]["abs_rel"] == pytest.approx(0.1)
    assert record["per_image"][1]["abs_rel"] is None  # NaN stored as null (strict JSON)

    md = md_path.read_text()
    lines = md.splitlines()
    assert "| region | AbsRel | SqRel | RMSE | RMSElog | log10 | d1 | d2 | d3 | SILog |" in lines
    all_row = next(line for line in lines if line.startswith("| all valid |"))
    assert all_row.split("|")[2].strip() == "0.1000"  # AbsRel column
    assert all_row.split("|")[3].strip() == "n/a"  # SqRel never given
    assert any(line.startswith("| boundary | 0.2000 |") for line in lines)
    assert "images scored: 1" in md and "images skipped (no valid pixel): 1" in md
    assert protocol.describe() in md
    assert sorted(p.name for p in json_path.parent.iterdir()) == [
        json_path.name,
        md_path.name,
    ]  # no temp files
