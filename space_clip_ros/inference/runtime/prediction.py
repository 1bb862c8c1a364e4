"""What every backend, and so the predictor, returns for a batch of frames."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Prediction:
    """The result of one engine run / predictor call; tensors stay on the model's device."""

    depth: torch.Tensor  # (B, H, W) float32 metres
    embedding: torch.Tensor | None = None  # (B, D) float32 CLIP image embedding, when asked for
