"""Training losses of the release (SPEC section 4): SILog, masked SSIM and their weighted sum.

Conventions shared by every function here:

* Depth tensors are ``(B, 1, H, W)`` or ``(B, H, W)``; prediction, ground truth and mask have the
  same shape. The mask is boolean.
* Reductions are **batch-joint**: the valid pixels of all samples are pooled into one set before
  the mean / variance is taken (``pred[mask]`` over the whole batch, as BTS and the release do), so
  a sample with many valid pixels weighs more than one with few.
* Statistics are computed in float32 (or the input's precision if higher) so that ``log`` and the
  variance stay accurate under mixed-precision autocast.
* When no pixel is valid, a loss returns ``0`` that still carries a ``grad_fn`` connected to
  ``pred`` (its gradient is exactly zero), so ``loss.backward()`` is harmless and the trainer can
  either step (no change) or skip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The head ends in ReLU, so predicted depth can be exactly 0; log needs a positive floor.
# 1 mm is below every dataset's valid range, so it never changes a sensible prediction.
PRED_FLOOR_M = 1e-3

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _check_shapes(pred: Tensor, gt: Tensor, valid_mask: Tensor) -> None:
    if pred.shape != gt.shape or pred.shape != valid_mask.shape:
        raise ValueError(
            f"pred, gt and valid_mask must have the same shape, got {tuple(pred.shape)}, "
            f"{tuple(gt.shape)}, {tuple(valid_mask.shape)}"
        )


def _stat_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def zero_loss_like(pred: Tensor) -> Tensor:
    """A scalar 0 connected to ``pred`` in the autograd graph, with an all-zero gradient.

    Summing an empty slice (rather than ``pred.sum() * 0``) keeps it finite even if ``pred``
    holds inf/NaN.
    """
    return pred.reshape(-1)[:0].sum().to(_stat_dtype(pred))


def silog_loss(pred: Tensor, gt: Tensor, valid_mask: Tensor, variance_focus: float = 0.85) -> Tensor:
    """Scale-invariant log loss ``10 * sqrt(Var(g) + (1 - variance_focus) * Mean(g)^2)``.

    ``g = log(pred) - log(gt)`` over the valid pixels of the whole batch jointly (batch-joint, as the
    release); ``Var`` is the population variance. ``pred`` is clamped to ``PRED_FLOOR_M`` before the
    log. With no valid pixel the result is a zero with a grad_fn (see module docstring).

    At ``g == 0`` everywhere, ``sqrt`` has an infinite derivative; the value is returned as exactly
    0 with a zero (not NaN) gradient.
    """
    _check_shapes(pred, gt, valid_mask)
    if not bool(valid_mask.any()):
        return zero_loss_like(pred)
    dtype = _stat_dtype(pred)
    pred_valid = pred[valid_mask].to(dtype).clamp_min(PRED_FLOOR_M)
    gt_valid = gt[valid_mask].to(dtype)
    g = torch.log(pred_valid) - torch.log(gt_valid)
    mean_g = g.mean()
    # Centred form keeps the population variance >= 0 exactly, unlike E[g^2] - E[g]^2.
    variance = (g - mean_g).square().mean()
    d = variance + (1.0 - variance_focus) * mean_g.square()
    positive = d > 0
    # Double-where: sqrt never sees 0, so its backward never produces inf * 0 = NaN.
    safe_d = torch.where(positive, d, torch.ones_like(d))
    return torch.where(positive, 10.0 * torch.sqrt(safe_d), torch.zeros_like(d))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 2-D Gaussian window of shape ``(1, 1, size, size)`` (sums to 1)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g1 = torch.exp(-(coords**2) / (2.0 * sigma**2))
    g1 = g1 / g1.sum()
    return torch.outer(g1, g1).reshape(1, 1, size, size)


def _as_nchw(t: Tensor) -> Tensor:
    if t.dim() == 3:
        return t.unsqueeze(1)
    if t.dim() == 4 and t.shape[1] == 1:
        return t
    raise ValueError(f"expected (B, H, W) or (B, 1, H, W), got {tuple(t.shape)}")


def _gaussian_filter(x: Tensor, window: Tensor) -> Tensor:
    """Same-size Gaussian filtering with reflect padding.

    Reflect padding (border pixel not repeated) keeps local statistics near the border made of real
    values instead of zeros, which would bias the means there. Reflect is undefined when the pad is
    not smaller than the map, so maps smaller than the half window fall back to replicate.
    """
    pad = window.shape[-1] // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    return F.conv2d(padded, window)


def ssim_map(x: Tensor, y: Tensor, window: Tensor | None = None) -> Tensor:
    """Per-pixel SSIM of two ``(B, 1, H, W)`` maps in [0, 1] (Gaussian window, C1 = 0.01^2, C2 = 0.03^2)."""
    if window is None:
        window = gaussian_window()
    window = window.to(device=x.device, dtype=x.dtype)
    mu_x = _gaussian_filter(x, window)
    mu_y = _gaussian_filter(y, window)
    sigma_xx = _gaussian_filter(x * x, window) - mu_x.square()
    sigma_yy = _gaussian_filter(y * y, window) - mu_y.square()
    sigma_xy = _gaussian_filter(x * y, window) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + SSIM_C1) * (2.0 * sigma_xy + SSIM_C2)
    denominator = (mu_x.square() + mu_y.square() + SSIM_C1) * (sigma_xx + sigma_yy + SSIM_C2)
    return numerator / denominator


def ssim_loss(pred: Tensor, gt: Tensor, valid_mask: Tensor, min_depth: float, max_depth: float) -> Tensor:
    """Mean of ``1 - SSIM`` over the valid pixels of the batch (batch-joint).

    Valid pixels are ``valid_mask & (min_depth < gt < max_depth)``. Before SSIM, each sample's
    prediction and ground truth are min-max normalised by that sample's valid GT range,
    ``(x - gt_min) / (gt_max - gt_min)``, and clamped to [0, 1]; the SSIM windows see every pixel
    (invalid GT pixels included, as normalised and clamped), only the loss average is masked.
    Samples without valid pixels contribute nothing; a flat valid GT range is floored at 1e-6.
    Same-size filtering uses reflect padding (see ``_gaussian_filter``).
    """
    _check_shapes(pred, gt, valid_mask)
    dtype = _stat_dtype(pred)
    pred4 = _as_nchw(pred).to(dtype)
    gt4 = _as_nchw(gt).to(dtype)
    valid4 = _as_nchw(valid_mask) & (gt4 > min_depth) & (gt4 < max_depth)
    if not bool(valid4.any()):
        return zero_loss_like(pred)

    batch = gt4.shape[0]
    flat_gt = gt4.detach().reshape(batch, -1)
    flat_valid = valid4.reshape(batch, -1)
    gt_min = torch.where(flat_valid, flat_gt, torch.full_like(flat_gt, math.inf)).amin(dim=1)
    gt_max = torch.where(flat_valid, flat_gt, torch.full_like(flat_gt, -math.inf)).amax(dim=1)
    has_valid = flat_valid.any(dim=1)
    # Samples without valid pixels get a harmless (0, 1) range; they are masked out below anyway.
    gt_min = torch.where(has_valid, gt_min, torch.zeros_like(gt_min)).reshape(batch, 1, 1, 1)
    gt_max = torch.where(has_valid, gt_max, torch.ones_like(gt_max)).reshape(batch, 1, 1, 1)
    gt_range = (gt_max - gt_min).clamp_min(1e-6)

    pred_n = ((pred4 - gt_min) / gt_range).clamp(0.0, 1.0)
    gt_n = ((gt4 - gt_min) / gt_range).clamp(0.0, 1.0)
    # Under autocast the convolutions would run in fp16/bf16, too coarse next to C1 = 1e-4.
    with torch.autocast(device_type=pred.device.type, enabled=False):
        one_minus_ssim = 1.0 - ssim_map(pred_n, gt_n)
    return one_minus_ssim[valid4].mean()


@dataclass(frozen=True)
class LossConfig:
    """Weights and valid range of the training loss (SPEC section 4).

    Attributes:
        silog_weight: weight of SILog on the main prediction.
        ssim_weight: weight of ``mean(1 - SSIM)`` on the main prediction.
        aux_weights: SILog weight of each auxiliary head, in head order; 0 means "not computed".
        variance_focus: lambda of SILog (``D = Var + (1 - lambda) Mean^2``).
        min_depth, max_depth: valid ground truth is ``min_depth < gt < max_depth`` (metres);
            the defaults are KITTI's (use 10 m for NYU).
    """

    silog_weight: float = 0.5
    ssim_weight: float = 0.5
    aux_weights: tuple[float, ...] = (0.10, 0.05, 0.00)
    variance_focus: float = 0.85
    min_depth: float = 1e-3
    max_depth: float = 80.0


class DepthLoss(nn.Module):
    """``silog_w * SILog + ssim_w * (1 - SSIM) + sum_i aux_w[i] * SILog(aux_i)`` (SPEC section 4)."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()

    def valid_mask(self, gt: Tensor) -> Tensor:
        """``min_depth < gt < max_depth``."""
        return (gt > self.config.min_depth) & (gt < self.config.max_depth)

    def forward(
        self, pred: Tensor, aux_list: Sequence[Tensor] | None, gt: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(total, parts)``.

        ``parts`` holds detached scalar tensors ``silog``, ``ssim``, ``aux_<i>`` (only heads with a
        non-zero weight) and ``total``; call ``.item()`` only when logging, to avoid a device sync
        every step. ``aux_list=None`` means the model returned no auxiliary outputs (eval mode): the
        auxiliary terms are then left out. Auxiliary maps of another size than ``gt`` are resized
        bilinearly to it.
        """
        cfg = self.config
        valid = self.valid_mask(gt)
        silog = silog_loss(pred, gt, valid, cfg.variance_focus)
        ssim = ssim_loss(pred, gt, valid, cfg.min_depth, cfg.max_depth)
        total = cfg.silog_weight * silog + cfg.ssim_weight * ssim
        parts: dict[str, Tensor] = {"silog": silog.detach(), "ssim": ssim.detach()}

        if aux_list is not None:
            for index, weight in enumerate(cfg.aux_weights):
                if weight == 0:
                    continue
                if index >= len(aux_list):
                    raise ValueError(
                        f"aux weight {index} is {weight} but the model returned {len(aux_list)} aux maps"
                    )
                aux = _resize_like(aux_list[index], gt)
                aux_silog = silog_loss(aux, gt, valid, cfg.variance_focus)
                total = total + weight * aux_silog
                parts[f"aux_{index}"] = aux_silog.detach()
        parts["total"] = total.detach()
        return total, parts


def _resize_like(aux: Tensor, gt: Tensor) -> Tensor:
    if aux.shape == gt.shape:
        return aux
    resized = F.interpolate(_as_nchw(aux), size=gt.shape[-2:], mode="bilinear", align_corners=False)
    return resized if gt.dim() == 4 else resized.squeeze(1)


def is_finite_loss(loss: Tensor) -> bool:
    """True when every element of ``loss`` is finite (the trainer skips the step otherwise)."""
    return bool(torch.isfinite(loss.detach()).all())
