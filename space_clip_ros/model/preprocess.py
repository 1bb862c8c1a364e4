"""Encoder input preparation shared by training and inference (one definition, so both agree)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize_and_normalize(
    images: torch.Tensor, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Whole-image bicubic resize to the encoder size (aspect ratio not kept), then normalise.

    Args:
        images: (B, 3, H, W) float RGB in [0, 1], on any device.
        input_size: encoder (H, W), e.g. (224, 224).
        mean, std: per-channel normalisation of the backbone.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    size = (int(input_size[0]), int(input_size[1]))
    if tuple(images.shape[-2:]) != size:
        # antialias=True follows PIL's bicubic (what CLIP's own preprocessing uses) when shrinking.
        images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
        images = images.clamp_(0.0, 1.0)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t
