"""Training losses: SILog, masked SSIM, the weighted DepthLoss and the finiteness check."""

from __future__ import annotations

import math

import pytest
import torch

from space_clip_ros.training.losses import (
    DepthLoss,
    LossConfig,
    gaussian_window,
    is_finite_loss,
    silog_loss,
    ssim_loss,
)


def _gt(batch: int = 2, h: int = 16, w: int = 16) -> torch.Tensor:
    # smooth positive depth with structure, 1..9 m
    ys = torch.linspace(0, 1, h).reshape(h, 1)
    xs = torch.linspace(0, 1, w).reshape(1, w)
    base = 1.0 + 4.0 * ys + 4.0 * xs * ys
    return torch.stack([base * (1.0 + 0.1 * b) for b in range(batch)]).unsqueeze(1)


def test_silog_zero_when_exact_with_finite_gradient():
    gt = _gt()
    pred = gt.clone().requires_grad_(True)
    loss = silog_loss(pred, gt, gt > 0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("k", [2.0, 0.5, 1.3])
def test_silog_of_constant_scale(k):
    # g = log k everywhere: Var = 0, Mean^2 = log^2 k -> 10 * sqrt(0.15) * |log k|
    gt = _gt()
    loss = silog_loss(k * gt, gt, gt > 0)
    assert loss.item() == pytest.approx(10.0 * math.sqrt(0.15) * abs(math.log(k)), rel=1e-5)


def test_silog_is_batch_joint():
    # sample 0 off by e (g = 1), sample 1 exact (g = 0), equal pixel counts:
    # pooled mean 0.5, population variance 0.25 -> D = 0.25 + 0.15 * 0.25 = 0.2875
    gt = torch.ones(2, 1, 2, 2)
    pred = torch.cat([torch.full((1, 1, 2, 2), math.e), torch.ones(1, 1, 2, 2)])
    loss = silog_loss(pred, gt, gt > 0)
    assert loss.item() == pytest.approx(10.0 * math.sqrt(0.2875), rel=1e-6)  # 5.3619
    # the per-sample mean would be (10 * sqrt(0.15) + 0) / 2 = 1.936: clearly different
    assert abs(loss.item() - 5.0 * math.sqrt(0.15)) > 1.0


def test_silog_only_counts_valid_pixels():
    gt = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])
    pred = torch.tensor([[[[2.0, 4.0], [8.0, 123.0]]]])  # valid pixels all off by factor 2
    loss = silog_loss(pred, gt, gt > 0)
    assert loss.item() == pytest.approx(10.0 * math.sqrt(0.15) * math.log(2.0), rel=1e-5)


def test_silog_survives_zero_prediction():
    gt = _gt()
    pred = torch.zeros_like(gt, requires_grad=True)  # dead ReLU head
    loss = silog_loss(pred, gt, gt > 0)
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("loss_fn", ["silog", "ssim"])
def test_empty_mask_gives_zero_with_grad_fn(loss_fn):
    gt = _gt()
    pred = (gt * 1.7).requires_grad_(True)
    nothing = torch.zeros_like(gt, dtype=torch.bool)
    loss = silog_loss(pred, gt, nothing) if loss_fn == "silog" else ssim_loss(pred, gt, nothing, 1e-3, 80.0)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(gt))


def test_gaussian_window_normalised_and_peaked():
    window = gaussian_window()
    assert window.shape == (1, 1, 11, 11)
    assert window.sum().item() == pytest.approx(1.0)
    assert window[0, 0, 5, 5] == window.max()
    # sigma 1.5: the 1-D weight ratio between offset 1 and centre is exp(-1 / 4.5)
    assert (window[0, 0, 5, 6] / window[0, 0, 5, 5]).item() == pytest.approx(math.exp(-1 / 4.5))


def test_ssim_loss_identical_is_zero_and_grows_with_difference():
    gt = _gt()
    valid = gt > 0
    assert ssim_loss(gt.clone(), gt, valid, 1e-3, 80.0).item() == pytest.approx(0.0, abs=1e-6)
    # structure mismatch: flipped rows
    small = ssim_loss(gt + 0.05 * torch.flip(gt, dims=(-2,)), gt, valid, 1e-3, 80.0).item()
    large = ssim_loss(torch.flip(gt, dims=(-2,)), gt, valid, 1e-3, 80.0).item()
    assert 0.0 < small < large
    # a uniform scale moves the normalised prediction away from the normalised GT
    assert ssim_loss(2.0 * gt, gt, valid, 1e-3, 80.0).item() > 0.01


def test_ssim_loss_on_tiny_maps_and_gradients():
    # 4x4 is smaller than the 5-pixel half window: replicate padding is used instead of reflect
    gt = _gt(batch=1, h=4, w=4)
    pred = (gt * 1.2).requires_grad_(True)
    loss = ssim_loss(pred, gt, gt > 0, 1e-3, 80.0)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_ssim_masks_per_sample_and_normalises_per_sample():
    gt = _gt()
    pred = gt * 1.3
    only_first = torch.zeros_like(gt, dtype=torch.bool)
    only_first[0] = True
    first_alone = ssim_loss(pred[:1], gt[:1], only_first[:1], 1e-3, 80.0).item()
    garbage = pred.clone()
    garbage[1] = 50.0  # sample 1 has no valid pixel: its prediction cannot matter
    assert ssim_loss(garbage, gt, only_first, 1e-3, 80.0).item() == pytest.approx(first_alone, rel=1e-6)
    # min-max normalisation by each sample's GT range: scaling one sample's pred and GT together
    # (within the valid range) changes nothing
    scaled_pred, scaled_gt = pred.clone(), gt.clone()
    scaled_pred[1] *= 5.0
    scaled_gt[1] *= 5.0
    valid = gt > 0
    reference = ssim_loss(pred, gt, valid, 1e-3, 80.0).item()
    assert ssim_loss(scaled_pred, scaled_gt, valid, 1e-3, 80.0).item() == pytest.approx(reference, rel=1e-5)


def test_depth_loss_combines_weights():
    cfg = LossConfig(min_depth=1e-3, max_depth=80.0)
    assert (cfg.silog_weight, cfg.ssim_weight, cfg.aux_weights) == (0.5, 0.5, (0.10, 0.05, 0.00))
    gt = _gt()
    valid = gt > 0
    pred = gt * 1.1
    aux0 = gt * 2.0
    aux1 = gt * 0.5
    aux2 = torch.full_like(gt, float("nan"))  # weight 0: must not even be computed
    total, parts = DepthLoss(cfg)(pred, [aux0, aux1, aux2], gt)

    silog_main = silog_loss(pred, gt, valid)
    ssim_main = ssim_loss(pred, gt, valid, 1e-3, 80.0)
    # aux SILog: 10 sqrt(0.15) |log 2| for both (factor 2 and 1/2)
    aux_silog = 10.0 * math.sqrt(0.15) * math.log(2.0)
    expected = 0.5 * silog_main + 0.5 * ssim_main + 0.10 * aux_silog + 0.05 * aux_silog
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(parts) == {"silog", "ssim", "aux_0", "aux_1", "total"}
    assert parts["aux_0"].item() == pytest.approx(aux_silog, rel=1e-5)
    assert is_finite_loss(total)


def test_depth_loss_valid_range_and_aux_handling():
    loss_fn = DepthLoss(LossConfig(max_depth=5.0))
    gt = _gt()
    pred = gt.clone()
    far = gt >= 5.0
    pred[far] = 100.0  # wrong only where gt is outside the valid range
    _, parts = loss_fn(pred, None, gt)
    assert parts["silog"].item() == 0.0
    assert "aux_0" not in parts  # no aux outputs (eval mode): aux terms left out
    with pytest.raises(ValueError, match="aux"):
        loss_fn(pred, [gt], gt)  # weight 0.05 for head 1 but only one aux map
    # aux maps at a lower resolution are resized to the ground truth
    small_aux = torch.nn.functional.interpolate(gt * 2.0, size=(8, 8), mode="bilinear", align_corners=False)
    total, parts = loss_fn(pred, [small_aux, small_aux, small_aux], gt)
    assert math.isfinite(total.item()) and parts["aux_0"].item() > 0


def test_is_finite_loss():
    assert is_finite_loss(torch.tensor(1.5))
    assert not is_finite_loss(torch.tensor(float("nan")))
    assert not is_finite_loss(torch.tensor(float("inf")))


def test_ssim_loss_under_autocast_matches_full_precision():
    gt = _gt()
    pred = gt * 1.2
    reference = ssim_loss(pred, gt, gt > 0, 1e-3, 80.0)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = ssim_loss(pred, gt, gt > 0, 1e-3, 80.0)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-6)
