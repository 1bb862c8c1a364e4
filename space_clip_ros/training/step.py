"""One training iteration of the decoder: forward (backbone or feature cache), loss, guarded update.

The dataset's [0, 1] crops go to the device, are resized and normalised there by the same function
inference uses, the frozen backbone encodes them (or the feature cache supplies its stored
outputs), the decoder predicts depth at the crop size and the loss scores it. AdamW over the
decoder's parameters, gradient-norm clip, EMA of the decoder. A non-finite loss (or gradient)
skips the step on every rank and changes nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..model import SpaceClip
from ..model.preprocess import resize_and_normalize
from .distributed import DistContext
from .ema import DecoderEMA
from .feature_cache import FeatureCache, batch_to_features
from .losses import is_finite_loss, zero_loss_like
from .schedule import WarmupCosine

LossFn = Callable[[torch.Tensor, Any, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class LossInputs(nn.Module):
    """The decoder, returning only the maps the loss reads.

    DDP (with ``find_unused_parameters``) treats every returned tensor as used; an auxiliary map
    with loss weight 0 (the release's third head) is therefore replaced by ``None`` so that its
    head is correctly seen as unused.
    """

    def __init__(self, decoder: nn.Module, aux_weights: tuple[float, ...]) -> None:
        super().__init__()
        self.decoder = decoder
        heads = len(decoder.aux_heads)
        self.used_aux = [i < len(aux_weights) and aux_weights[i] != 0 for i in range(heads)]

    def forward(
        self, hidden: Any, global_features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]
    ) -> tuple[torch.Tensor, list[torch.Tensor | None] | None]:
        if not any(self.used_aux):
            return self.decoder(hidden, global_features, grid, size, with_aux=False).depth, None
        out = self.decoder(hidden, global_features, grid, size, with_aux=True)
        return out.depth, [aux if used else None for aux, used in zip(out.aux, self.used_aux)]


@dataclass
class Optimisation:
    """What updates the decoder: built once per run (``run_setup.build_optimisation``).

    Attributes:
        params: the decoder's trainable parameters (the optimiser never sees a backbone one).
        optimizer: AdamW over ``params``.
        schedule: learning rate as a function of the global step.
        train_decoder: the decoder as the loss sees it (:class:`LossInputs`, DDP-wrapped when distributed).
        ema: EMA of the decoder, or ``None``.
        scaler: fp16 loss scaler (disabled otherwise).
        amp_dtype: autocast dtype, ``None`` for fp32.
        grad_clip_norm: global gradient-norm clip (0 disables).
    """

    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    train_decoder: nn.Module
    ema: DecoderEMA | None
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    grad_clip_norm: float


@dataclass
class StepResult:
    parts: dict[str, torch.Tensor]
    grad_norm: float | None
    skipped: str | None  # None, "nonfinite_loss" or "nonfinite_grad"


def _autocast(amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=amp_dtype)


def forward_batch(
    model: SpaceClip, optim: Optimisation, cache: FeatureCache | None, batch: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, list[torch.Tensor | None] | None, torch.Tensor]:
    """(depth, auxiliary maps, ground truth) of a batch, in float32."""
    gt = batch["depth"].to(device, non_blocking=True)
    size = (int(gt.shape[-2]), int(gt.shape[-1]))  # predict at the crop size (= ground-truth size)
    with _autocast(optim.amp_dtype):
        if cache is not None:
            features = batch_to_features(batch, cache.grid, device)
        else:
            images = batch["image"].to(device, non_blocking=True)
            features = model.forward_features(resize_and_normalize(images, model.input_size, model.mean, model.std))
        depth, aux = optim.train_decoder(features.hidden, features.global_features, features.grid, size)
    aux_fp32 = None if aux is None else [a.float() if a is not None else None for a in aux]
    return depth.float(), aux_fp32, gt


def train_step(
    model: SpaceClip, optim: Optimisation, cache: FeatureCache | None, loss_fn: LossFn, batch: dict[str, Any],
    context: DistContext,
) -> StepResult:
    """Forward, loss, backward, clip, AdamW and EMA update; or a skip that changes nothing."""
    optimizer = optim.optimizer
    # The forward pass updates batch-norm running statistics; a skipped step must not keep
    # them (a NaN batch would otherwise poison every later evaluation). They are tiny to copy.
    buffers = [b.detach().clone() for b in model.decoder.buffers()]
    pred, aux, gt = forward_batch(model, optim, cache, batch, context.device)
    total, parts = loss_fn(pred, aux, gt)
    # Every rank must take the same branch, or DDP's gradient all-reduce would hang.
    if not context.all_true(is_finite_loss(total)):
        if context.distributed:
            # DDP expects a backward after every forward (its reduction would otherwise fail on
            # the next step); a zero connected to every output completes it, and the
            # (meaningless) gradients are then thrown away.
            outputs = [pred] + [a for a in aux or [] if a is not None]
            sum(zero_loss_like(o) for o in outputs).backward()
        optimizer.zero_grad(set_to_none=True)
        _restore_buffers(model.decoder, buffers)
        return StepResult(parts, None, "nonfinite_loss")
    optim.scaler.scale(total).backward()
    optim.scaler.unscale_(optimizer)
    clip = optim.grad_clip_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(optim.params, clip if clip > 0 else math.inf)
    # Gradients are already all-reduced, so every rank sees the same norm.
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        optim.scaler.update()
        _restore_buffers(model.decoder, buffers)
        return StepResult(parts, float(grad_norm), "nonfinite_grad")
    optim.scaler.step(optimizer)
    optim.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if optim.ema is not None:
        optim.ema.update(model.decoder)
    return StepResult(parts, float(grad_norm), None)


@torch.no_grad()
def _restore_buffers(decoder: nn.Module, saved: list[torch.Tensor]) -> None:
    for buffer, value in zip(decoder.buffers(), saved):
        buffer.copy_(value)
