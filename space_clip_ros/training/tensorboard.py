"""TensorBoard logging for training: scalars every few steps, image grids every epoch (rank 0 only)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import torch

from ..msgs.image import colorize_depth

logger = logging.getLogger(__name__)


def depth_to_rgb(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 RGB with the turbo colour map (invalid pixels black)."""
    return cv2.cvtColor(colorize_depth(depth.astype(np.float32), min_depth, max_depth), cv2.COLOR_BGR2RGB)


def image_grid(images: torch.Tensor, gts: torch.Tensor, preds: torch.Tensor, max_depth: float) -> np.ndarray:
    """One row per sample: input | ground truth | prediction, as (H_total, 3 W, 3) uint8 RGB.

    ``images`` are (B, 3, H, W) in [0, 1]; ``gts``/``preds`` (B, 1, H, W) metres. Ground truth and
    prediction share the colour scale of that sample's ground truth, so colours compare directly.
    """
    rows = []
    for image, gt, pred in zip(images, gts, preds):
        rgb = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        gt_np = gt[0].cpu().numpy()
        valid = gt_np[gt_np > 0]
        lo = float(valid.min()) if valid.size else 0.0
        hi = float(valid.max()) if valid.size else max_depth
        hi = hi if hi > lo else lo + 1e-3
        gt_rgb = depth_to_rgb(gt_np, lo, hi)
        pred_rgb = depth_to_rgb(pred[0].float().cpu().numpy(), lo, hi)
        rows.append(np.concatenate([rgb, gt_rgb, pred_rgb], axis=1))
    return np.concatenate(rows, axis=0)


class TrainLogger:
    """Writes TensorBoard events under ``log_dir``; every method is a no-op when disabled.

    Disabled on ranks other than 0 and when TensorBoard logging is switched off, so callers
    never branch on the rank themselves.
    """

    def __init__(self, log_dir: str | Path | None, enabled: bool = True) -> None:
        self.writer = None
        if enabled and log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

            self.writer = SummaryWriter(log_dir=str(log_dir))
            logger.info("TensorBoard logs in %s (tensorboard --logdir %s)", log_dir, log_dir)

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, grid, step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
