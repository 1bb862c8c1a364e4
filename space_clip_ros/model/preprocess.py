"""Encoder input preparation shared by training and inference (one definition, so both agree)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


def pixels_from_frames(
    frames: np.ndarray,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 RGB camera frames (B, H, W, 3), or one (H, W, 3), as normalised encoder pixels
    (B, 3, h, w) float32 on ``device`` (:func:`resize_and_normalize`)."""
    array = np.ascontiguousarray(frames)
    if array.ndim == 3:
        array = array[None]
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255)
    if device is not None:
        tensor = tensor.to(device)
    return resize_and_normalize(tensor, input_size, mean, std)
