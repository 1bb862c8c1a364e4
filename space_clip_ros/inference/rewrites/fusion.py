"""Fold inference-time batch norm into the convolution before it.

In eval mode BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * g + b``;
applied to a convolution's output it equals the same convolution with each output channel's
weights scaled by ``g / sqrt(var + eps)`` and a bias ``b + (bias - mean) * scale``. Folding removes
one full read and write of every activation map, which matters most at the decoder's 224x224
stages. Only ``nn.Sequential`` pairs ``Conv2d -> BatchNorm2d`` are folded (every BN of the decoder
sits in one: ConvBNReLU, the residual body and the heads), and the BN is replaced by Identity.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d (with bias) computing ``bn(conv(x))`` of the eval-mode pair."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    # Compute in float64 so that folding itself adds no rounding beyond the final cast.
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    with torch.no_grad():
        weight = conv.weight.detach().double() * scale.view(-1, 1, 1, 1)
        fused.weight.copy_(weight.to(conv.weight.dtype))
        fused.bias.copy_((beta + (bias - mean) * scale).to(conv.weight.dtype))
    fused.requires_grad_(False)
    return fused


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every ``Conv2d -> BatchNorm2d`` pair inside ``nn.Sequential`` containers, in place.

    The module must be in eval mode (running statistics are what gets folded). Returns the number
    of pairs folded.
    """
    if module.training:
        raise ValueError("fold batch norm on an eval-mode module only (call .eval() first)")
    folded = 0
    for sequential in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequential._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = sequential._modules[first], sequential._modules[second]
            if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                sequential._modules[first] = fold_conv_bn(conv, bn)
                sequential._modules[second] = nn.Identity()
                folded += 1
    return folded


def remaining_batch_norms(module: nn.Module) -> int:
    """How many BatchNorm layers are still in ``module`` (used to check a fold was complete)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
