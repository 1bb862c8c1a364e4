"""Learning-rate schedule of the release: linear warm-up, then cosine decay to a floor (per iteration)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """Learning rate as a pure function of the iteration index.

    Iterations ``0 .. warmup_steps - 1`` ramp linearly up to ``base_lr`` (iteration ``i`` uses
    ``base_lr * (i + 1) / warmup_steps``, so the first step is not wasted at lr 0); the remaining
    iterations follow half a cosine from ``base_lr`` down to ``min_lr``, reached at the last one.

    Being a pure function of the step, the schedule needs no state of its own to resume: the
    global step is enough.
    """

    base_lr: float
    min_lr: float
    total_steps: int
    warmup_steps: int

    @classmethod
    def from_fraction(cls, base_lr: float, min_lr: float, total_steps: int, warmup_fraction: float) -> WarmupCosine:
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        warmup = min(int(round(warmup_fraction * total_steps)), total_steps - 1)
        return cls(base_lr=base_lr, min_lr=min_lr, total_steps=total_steps, warmup_steps=max(warmup, 0))

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min((step - self.warmup_steps) / max(decay_steps - 1, 1), 1.0)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's lr for iteration ``step``; returns it."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, float | int]:
        return {
            "base_lr": self.base_lr,
            "min_lr": self.min_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }
