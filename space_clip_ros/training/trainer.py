"""The training run of the release recipe (SPEC section 4), single process or DDP.

:class:`Trainer` puts the parts together: ``run_setup`` builds them from the config, ``step`` is
one iteration, ``loop`` one epoch, ``checkpoint_writer`` what an epoch leaves on disk and
``checkpointing`` the resume file. Per epoch: the steps, validation on held-out scenes with the
raw and the EMA weights, ``last`` checkpoint (the better of the two), ``best`` by validation
AbsRel, the resume state, TensorBoard scalars and pictures; with ``train.resume_every_steps`` the
resume state is also written within the epoch. Only rank 0 writes files; all ranks meet at a
barrier around the writes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..model import SpaceClip, create_model
from .checkpoint_writer import CheckpointWriter, choose_weights
from .checkpointing import ResumeState, capture_rng_state, restore_rng_state, seed_everything
from .config import TrainConfig, dump_yaml
from .distributed import DistContext
from .evaluate import EvalResult, evaluate_decoders
from .loop import EpochLoop, EpochSums, RunState
from .losses import DepthLoss
from .run_setup import (
    RANDOM_BACKBONE_FILE,
    build_cache,
    build_data,
    build_optimisation,
    determinism,
    keep_random_backbone,
    validation_protocol,
)
from .step import StepResult, train_step
from .tensorboard import TrainLogger, image_grid
from .train_loader import EpochLoader

__all__ = ["RANDOM_BACKBONE_FILE", "StepResult", "TrainSummary", "Trainer"]  # names callers import from here

logger = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    run_dir: Path
    epochs_completed: int
    global_step: int
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and runs its epochs.

    Args:
        config: the run's configuration.
        run_dir: where checkpoints, the resume state, reports and TensorBoard logs go.
        context: distributed context (default: a world of one on ``config.train.device``).
        resume: a saved state to continue from (its config must already have been checked).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | os.PathLike,
        context: DistContext | None = None,
        resume: ResumeState | None = None,
    ) -> None:
        from .distributed import resolve_device

        self.config = config
        self.run_dir = Path(run_dir)
        self.ctx = context or DistContext(device=resolve_device(config.train.device, 0))
        self.device = self.ctx.device
        self.progress = config.log.progress and self.ctx.is_main
        self.state = RunState()

        # The same seed on every rank while the model is built: a random backbone (tests, quick
        # start) and the decoder's initial weights must be identical across ranks.
        seed_everything(config.run.seed)
        self.data = build_data(config, self.run_dir, self.ctx, self.progress)
        self.paths, self.train_base, self.val_dataset = self.data.paths, self.data.train_base, self.data.val_dataset
        self.train_focal = self.data.train_focal
        self.model: SpaceClip = create_model(config.model).to(self.device)
        self.backbone_file = keep_random_backbone(config, self.model, self.run_dir, self.ctx)
        seed_everything(config.run.seed + self.ctx.rank)  # per-rank streams (dropout) from here on
        cached = build_cache(config, self.model, self.train_base, self.ctx, self.progress)
        self.cache, self.train_dataset, self.cache_fill_stats = cached.cache, cached.train_dataset, cached.fill_stats
        self.epoch_loader = EpochLoader(self.train_dataset, config, self.ctx, pin_memory=self.device.type == "cuda")
        self.train_loader = self.epoch_loader.loader
        self.steps_per_epoch = self.epoch_loader.steps_per_epoch
        self.optim = build_optimisation(config, self.model, self.ctx, self.steps_per_epoch)
        self.params, self.optimizer, self.ema = self.optim.params, self.optim.optimizer, self.optim.ema
        self.loss_fn = DepthLoss(config.loss)
        self.protocol = validation_protocol(config)
        self.tb = TrainLogger(self.run_dir / "tensorboard", enabled=self.ctx.is_main and config.log.tensorboard)
        self.loop = EpochLoop(config, self.epoch_loader, self.train_base, self.optim.schedule, self.optimizer,
                              self.tb, self.ctx, self.progress)
        self.writer = CheckpointWriter(config, self.run_dir, self.ctx, self.model, self.ema, self.data,
                                       self.backbone_file)
        if resume is not None:
            self._load_resume_state(resume)

    # ------------------------------------------------------------------ resume

    def _load_resume_state(self, saved: ResumeState) -> None:
        self.model.decoder.load_state_dict(saved.decoder)
        if self.ema is not None and saved.ema is not None:
            self.ema.load_state_dict(saved.ema)
        self.optimizer.load_state_dict(saved.optimizer)
        if saved.scaler:
            self.optim.scaler.load_state_dict(saved.scaler)
        self.state = RunState(epoch=saved.epoch, global_step=saved.global_step, step_in_epoch=saved.step_in_epoch,
                              counters={**self.state.counters, **saved.counters}, best=dict(saved.best),
                              history=list(saved.history))
        rank = self.ctx.rank
        if saved.world_size == self.ctx.world_size and len(saved.rng) > rank:
            if saved.step_in_epoch and len(saved.epoch_sums) > rank:
                self.state.epoch_sums = EpochSums.from_plain(saved.epoch_sums[rank], self.device)
            rank_state = saved.rng[rank]
            self.epoch_loader.restore_generator(rank_state["data_generator"])
            restore_rng_state(rank_state)  # last: everything above may have drawn random numbers
        else:
            logger.warning(
                "resume state was written by %d processes, this run has %d: random streams restart from the "
                "seed, so the continuation is valid but not bit-identical%s", saved.world_size, self.ctx.world_size,
                " (and this epoch's averaged losses cover only the steps after the resume)"
                if saved.step_in_epoch else "",
            )
        where = f"epoch {saved.epoch + 1}, step {saved.step_in_epoch} of it" if saved.step_in_epoch \
            else f"the end of epoch {saved.epoch}"
        logger.info("resumed %s at %s (global step %d)", self.run_dir, where, self.state.global_step)

    def _resume_state(self) -> ResumeState:
        """Everything continuing exactly needs (collective: gathers every rank's RNG state)."""
        state = self.state
        mid_epoch = state.step_in_epoch > 0
        rank_state = capture_rng_state()
        rank_state["data_generator"] = self.epoch_loader.generator_state(mid_epoch)
        gathered = self.ctx.gather_objects({"rng": rank_state,
                                            "sums": state.epoch_sums.to_plain() if mid_epoch else None})
        return ResumeState(
            config=self.config.to_dict(),
            epoch=state.epoch,
            global_step=state.global_step,
            decoder={k: v.detach().cpu().clone() for k, v in self.model.decoder.state_dict().items()},
            ema=None if self.ema is None else {k: v.detach().cpu().clone() for k, v in self.ema.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            rng=[g["rng"] for g in gathered],
            sampler_seed=self.config.run.seed,
            counters=dict(state.counters),
            best=dict(state.best),
            history=list(state.history),
            world_size=self.ctx.world_size,
            schedule=self.optim.schedule.state_dict(),
            step_in_epoch=state.step_in_epoch,
            epoch_sums=[g["sums"] for g in gathered] if mid_epoch else [],
            scaler=self.optim.scaler.state_dict(),
        )

    def _save_mid_epoch(self) -> None:
        self.writer.write_resume(self._resume_state())
        logger.debug("resume state saved at global step %d", self.state.global_step)

    # ------------------------------------------------------------------ one iteration, one epoch

    def train_step(self, batch: dict[str, Any]) -> StepResult:
        return train_step(self.model, self.optim, self.cache, self.loss_fn, batch, self.ctx)

    def train_epoch(self) -> dict[str, float]:
        self.model.train()  # the backbone stays in eval mode by construction
        return self.loop.run(self.state, self.train_step, self._save_mid_epoch)

    def validate(self) -> dict[str, EvalResult]:
        # Every rank must score (and rank 0 save) the same weights, batch-norm statistics included.
        self.ctx.broadcast_buffers(self.model.decoder)
        if self.ema is not None:
            self.ctx.broadcast_buffers(self.ema.module)
        if self.val_dataset is None:
            return {}
        decoders: dict[str, nn.Module] = {"raw": self.model.decoder}
        if self.ema is not None and self.config.val.ema:
            decoders["ema"] = self.ema.module
        return evaluate_decoders(
            self.model, self.val_dataset, self.protocol, decoders,
            device=self.device, batch_size=self.config.val.batch_size, num_workers=self.config.val.num_workers,
            context=self.ctx, progress=self.progress, keep_examples=self.config.log.num_images,
        )

    # ------------------------------------------------------------------ the run

    def fit(self, stop_after_epochs: int | None = None) -> TrainSummary:
        """Train the remaining epochs (or only ``stop_after_epochs`` of them in this session)."""
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.config))
        with determinism(self.config.train.deterministic, self.device):
            self._run_epochs(stop_after_epochs)
        self.tb.close()
        state = self.state
        return TrainSummary(self.run_dir, state.epoch, state.global_step, dict(state.best), list(state.history),
                            dict(state.counters))

    def _run_epochs(self, stop_after_epochs: int | None) -> None:
        state = self.state
        done_this_session = 0
        while state.epoch < self.config.train.epochs:
            if stop_after_epochs is not None and done_this_session >= stop_after_epochs:
                logger.info("stopping after %d epoch(s) as asked; continue with --resume %s",
                            done_this_session, self.run_dir)
                break
            started = time.perf_counter()
            train_stats = self.train_epoch()
            results = self.validate()
            state.finish_epoch()
            done_this_session += 1
            chosen = choose_weights(results, self.ema is not None)
            score = results[chosen].abs_rel if results else math.nan
            is_best = bool(results) and math.isfinite(score) and score < state.best["abs_rel"]
            if is_best:
                state.best = {"abs_rel": score, "epoch": state.epoch, "weights": chosen}
            summary = {
                "epoch": state.epoch,
                "global_step": state.global_step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train": train_stats,
                "val": {name: r.aggregate for name, r in results.items()},
                "weights": chosen,
                "is_best": is_best,
                "counters": dict(state.counters),
                "bad_samples": len(self.train_base.skipped),
                "seconds": round(time.perf_counter() - started, 3),
            }
            state.history.append(summary)
            self._log_epoch(summary, results, chosen)
            self.writer.write_epoch(results, summary, self._resume_state())

    def _log_epoch(self, summary: dict[str, Any], results: dict[str, EvalResult], chosen: str) -> None:
        if not self.ctx.is_main:
            return
        step, epoch = self.state.global_step, self.state.epoch
        self.tb.scalars("epoch", {f"train_{k}": v for k, v in summary["train"].items()}, step)
        for name, result in results.items():
            self.tb.scalars(f"val_{name}", result.aggregate, step)
        if results and results[chosen].examples:
            # One picture needs one size: keep the examples shaped like the first.
            examples = [e for e in results[chosen].examples if e.gt.shape == results[chosen].examples[0].gt.shape]
            preds = [torch.nn.functional.interpolate(e.pred[None], size=e.gt.shape[-2:], mode="bilinear")[0]
                     for e in examples]
            grid = image_grid(torch.stack([e.image for e in examples]), torch.stack([e.gt for e in examples]),
                              torch.stack(preds), self.config.loss.max_depth)
            self.tb.image("val/input_gt_prediction", grid, epoch)
        self.tb.flush()
        self.train_base.log_skipped()
        val = " ".join(f"{name} AbsRel {r.abs_rel:.4f}" for name, r in results.items())
        logger.info("epoch %d/%d: loss %.4f, %s -> %s weights%s (%.1f s)", epoch, self.config.train.epochs,
                    summary["train"].get("total", math.nan), val or "no validation", chosen,
                    " (new best)" if summary["is_best"] else "", summary["seconds"])
