"""Exponential moving average of the decoder's weights (SPEC section 4: decay 0.996)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class DecoderEMA:
    """``ema = decay * ema + (1 - decay) * current`` after every optimiser step.

    Averages the floating-point parameters *and* the floating-point buffers (batch-norm running
    mean and variance), so that the averaged weights come with matching normalisation statistics;
    integer buffers (``num_batches_tracked``) are copied. The copy lives on the same device as the
    model, never receives gradients and stays in eval mode.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(module).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        current = module.state_dict()
        for name, averaged in self.module.state_dict().items():
            value = current[name].detach()
            if averaged.dtype.is_floating_point:
                averaged.mul_(self.decay).add_(value.to(averaged.dtype), alpha=1.0 - self.decay)
            else:
                averaged.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
