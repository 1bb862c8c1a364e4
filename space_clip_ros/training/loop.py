"""The training loop over one epoch: steps, learning rate, counters, logging, mid-epoch resume points.

:class:`RunState` is where a run stands (epoch, step, counters, best score, this epoch's loss sums):
what the resume state records and what the loop advances. An epoch may start part-way, at
``RunState.step_in_epoch`` (a run resumed from a mid-epoch save); the loader then skips the batches
already done, and the epoch's averages include the sums saved with them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import TrainConfig
from .datasets import DepthDataset
from .distributed import DistContext
from .schedule import WarmupCosine
from .step import StepResult
from .tensorboard import TrainLogger
from .train_loader import EpochLoader

logger = logging.getLogger(__name__)


@dataclass
class EpochSums:
    """This rank's loss sums, step and skip counts over the current epoch so far."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    skipped: int = 0

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        for key, value in parts.items():
            value = value.detach().float()
            self.sums[key] = self.sums.get(key, torch.zeros((), device=value.device)) + value

    def to_plain(self) -> dict[str, Any]:
        """Tensors and numbers only (for the resume file)."""
        return {"sums": {k: v.detach().cpu().clone() for k, v in self.sums.items()},
                "steps": self.steps, "skipped": self.skipped}

    @classmethod
    def from_plain(cls, plain: dict[str, Any], device: torch.device) -> EpochSums:
        return cls({k: v.to(device) for k, v in plain["sums"].items()}, int(plain["steps"]), int(plain["skipped"]))


def _fresh_counters() -> dict[str, int]:
    return {"nonfinite_loss": 0, "nonfinite_grad": 0}


def _no_best() -> dict[str, Any]:
    return {"abs_rel": math.inf, "epoch": None, "weights": None}


@dataclass
class RunState:
    """Where a run stands.

    Attributes:
        epoch: completed epochs (the loop runs epoch index ``epoch`` next).
        global_step: iterations done (the learning rate is a function of it).
        step_in_epoch: iterations done in epoch ``epoch`` (0 between epochs).
        counters: skipped steps by reason.
        best: best validation AbsRel so far, its epoch and weights (raw/ema).
        history: one summary per completed epoch.
        epoch_sums: this rank's loss sums over the current epoch.
    """

    epoch: int = 0
    global_step: int = 0
    step_in_epoch: int = 0
    counters: dict[str, int] = field(default_factory=_fresh_counters)
    best: dict[str, Any] = field(default_factory=_no_best)
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_sums: EpochSums = field(default_factory=EpochSums)

    def finish_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_sums = EpochSums()


class EpochLoop:
    """Runs the steps of an epoch; see the module docstring.

    Args:
        config: the run's configuration (epochs, log cadence, ``train.resume_every_steps``).
        loader: the training batches.
        dataset: the augmenting dataset (told the epoch: augmentation is a function of it).
        schedule, optimizer: the learning rate is set for every step from the global step.
        logger_tb: TensorBoard scalars.
        context: distributed context (the epoch's averages are reduced over all ranks).
        progress: show a progress bar.
    """

    def __init__(self, config: TrainConfig, loader: EpochLoader, dataset: DepthDataset, schedule: WarmupCosine,
                 optimizer: torch.optim.Optimizer, logger_tb: TrainLogger, context: DistContext,
                 progress: bool) -> None:
        self.config = config
        self.loader = loader
        self.dataset = dataset
        self.schedule = schedule
        self.optimizer = optimizer
        self.tb = logger_tb
        self.ctx = context
        self.progress = progress

    def run(self, state: RunState, step: Callable[[dict[str, Any]], StepResult],
            save_resume: Callable[[], None]) -> dict[str, float]:
        """Steps from ``state.step_in_epoch`` to the end of epoch ``state.epoch``; returns its averages.

        ``save_resume`` is called every ``train.resume_every_steps`` global steps, except after an
        epoch's last step (the end-of-epoch save follows it).
        """
        from tqdm import tqdm

        every = self.config.train.resume_every_steps
        steps_per_epoch = self.loader.steps_per_epoch
        self.dataset.set_epoch(state.epoch)
        batches = self.loader.epoch(state.epoch, state.step_in_epoch)
        bar = tqdm(total=steps_per_epoch, initial=state.step_in_epoch,
                   desc=f"epoch {state.epoch + 1}/{self.config.train.epochs}", disable=not self.progress, leave=False)
        for batch in batches:
            lr = self.schedule.apply(self.optimizer, state.global_step)
            result = step(batch)
            state.global_step += 1
            state.step_in_epoch += 1
            if result.skipped:
                state.counters[result.skipped] += 1
                state.epoch_sums.skipped += 1
                logger.warning("step %d skipped (%s)", state.global_step, result.skipped.replace("_", " "))
            else:
                state.epoch_sums.add(result.parts)
            if state.global_step % max(1, self.config.log.every_steps) == 0:
                scalars = {f"loss_{k}" if k != "total" else "loss": float(v) for k, v in result.parts.items()}
                scalars.update(lr=lr, skipped_steps=sum(state.counters.values()))
                if result.grad_norm is not None:
                    scalars["grad_norm"] = result.grad_norm
                self.tb.scalars("train", scalars, state.global_step)
            bar.update(1)
            if not result.skipped:
                bar.set_postfix(loss=f"{float(result.parts['total']):.4f}", lr=f"{lr:.2e}")
            if every and state.global_step % every == 0 and state.step_in_epoch < steps_per_epoch:
                save_resume()
        bar.close()
        return self._reduce(state.epoch_sums)

    def _reduce(self, sums: EpochSums) -> dict[str, float]:
        """Mean of each loss part over every rank's steps; steps and skips per rank."""
        device = self.ctx.device
        keys = sorted(sums.sums)
        vector = torch.stack([sums.sums[k].to(device) for k in keys]
                             + [torch.tensor(float(sums.steps), device=device),
                                torch.tensor(float(sums.skipped), device=device)])
        vector = self.ctx.all_reduce_sum(vector.to(self.ctx.reduce_device, torch.float64)).cpu()
        total_steps = max(float(vector[-2]), 1.0)
        out = {key: float(vector[i]) / total_steps for i, key in enumerate(keys)}
        out["steps"] = float(vector[-2]) / self.ctx.world_size
        out["skipped"] = float(vector[-1]) / self.ctx.world_size
        return out
