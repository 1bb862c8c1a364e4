"""The training loop of the release recipe (SPEC section 4), single process or DDP.

Per iteration: the dataset's [0, 1] crops go to the device, are resized and normalised there by
the same function inference uses, the frozen backbone encodes them (or the feature cache supplies
its stored outputs), the decoder predicts depth at the crop size, and :class:`DepthLoss` scores it.
AdamW over the decoder's parameters, per-iteration warm-up + cosine schedule, gradient-norm clip,
EMA of the decoder. A non-finite loss (or gradient) skips the step on every rank and is counted.

Per epoch: validation on held-out scenes with the raw and the EMA weights, ``last`` checkpoint
(the better of the two), ``best`` by validation AbsRel, the resume state, TensorBoard scalars and
pictures. Only rank 0 writes files; all ranks meet at a barrier around the writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..model import CheckpointRecord, SpaceClip, create_model, make_record, save_checkpoint, save_vision_weights
from ..model.preprocess import resize_and_normalize
from . import data_setup
from .checkpointing import (
    RESUME_FILE,
    ResumeState,
    capture_rng_state,
    restore_rng_state,
    save_resume_state,
    seed_everything,
)
from .config import TrainConfig, dump_yaml
from .distributed import DistContext
from .ema import DecoderEMA
from .evaluate import EvalResult, evaluate_decoders, write_eval_report
from .feature_cache import CachedFeatureDataset, FeatureCache, batch_to_features
from .losses import DepthLoss, is_finite_loss, zero_loss_like
from .protocol import EvalProtocol, get_protocol
from .schedule import WarmupCosine
from .tensorboard import TrainLogger, image_grid

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
RANDOM_BACKBONE_FILE = "backbone_random_weights.safetensors"


def seed_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn signature
    """Seed numpy and python in a DataLoader worker from the torch seed the loader gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


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
class StepResult:
    parts: dict[str, torch.Tensor]
    grad_norm: float | None
    skipped: str | None  # None, "nonfinite_loss" or "nonfinite_grad"


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

        # The same seed on every rank while the model is built: a random backbone (tests, quick
        # start) and the decoder's initial weights must be identical across ranks.
        seed_everything(config.run.seed)
        self.counters: dict[str, int] = {"nonfinite_loss": 0, "nonfinite_grad": 0}
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"abs_rel": math.inf, "epoch": None, "weights": None}
        self.epoch = 0
        self.global_step = 0

        self._setup_data()
        self.model: SpaceClip = create_model(config.model).to(self.device)
        self.backbone_file = self._keep_random_backbone()
        seed_everything(config.run.seed + self.ctx.rank)  # per-rank streams (dropout) from here on
        self._setup_cache()
        self._setup_loaders()
        self._setup_optimisation()
        self.loss_fn = DepthLoss(config.loss)
        self.protocol = self._validation_protocol()
        self.tb = TrainLogger(self.run_dir / "tensorboard", enabled=self.ctx.is_main and config.log.tensorboard)
        if resume is not None:
            self._load_resume_state(resume)

    # ------------------------------------------------------------------ set-up

    @contextlib.contextmanager
    def _determinism(self):
        """``torch.use_deterministic_algorithms`` for the run only (the flag is process-wide)."""
        if not self.config.train.deterministic:
            yield
            return
        previous = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
        if self.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        # Warn-only on CUDA: bilinear upsampling's backward has no deterministic CUDA kernel.
        torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            torch.backends.cudnn.benchmark = previous[2]

    def _setup_data(self) -> None:
        data = self.config.data
        with self.ctx.main_first():
            if self.ctx.is_main:
                data_setup.ensure_synthetic_dataset(data, progress=self.progress)
        self.paths = data_setup.resolve_data_paths(data)
        entries = data_setup.read_train_entries(data, self.paths)
        train_entries, val_entries = data_setup.split_train_validation(entries, data.val_fraction, data.val_seed)
        self.train_focal = data_setup.training_focal(train_entries)
        crop = data.augment.crop_size if data.augment.crop else None
        split_dir = self.run_dir / "splits"
        with self.ctx.main_first():
            if self.ctx.is_main:
                data_setup.write_entries(split_dir / "train.txt", train_entries)
                if val_entries:
                    data_setup.write_entries(split_dir / "val.txt", val_entries)
        loss = self.config.loss
        self.train_base = data_setup.train_dataset(
            data, self.paths, split_dir / "train.txt", loss.min_depth, loss.max_depth, self.config.run.seed,
            augment=data_setup.cache_augment(data.augment) if data.feature_cache else None,
        )
        self.val_dataset = (
            data_setup.eval_dataset(data.dataset, self.paths.data_path, self.paths.gt_path, split_dir / "val.txt",
                                    data.depth_scale)
            if val_entries
            else None
        )
        # The image size the model saw in training (recorded with the focal length for deployment).
        self.train_image_size = list(crop) if crop else list(self.train_base[0]["depth"].shape[-2:])
        logger.info("training on %d images, validating on %d (held-out scenes)",
                    len(self.train_base), 0 if self.val_dataset is None else len(self.val_dataset))

    def _keep_random_backbone(self) -> Path | None:
        """Save a random-weight backbone beside the checkpoints, so that they can be used elsewhere.

        Random weights (``pretrained: null``, tests and the synthetic quick start) are drawn anew in
        every process; a checkpoint is only meaningful with the exact backbone it was trained on.
        The record then names this file as the backbone's weights.
        """
        if self.config.model.backbone.pretrained is not None:
            return None
        path = (self.run_dir / RANDOM_BACKBONE_FILE).resolve()
        if self.ctx.is_main and not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_vision_weights(self.model.backbone, path)
            logger.warning("backbone has random weights; saved them to %s (the checkpoints refer to this file)", path)
        return path

    def _setup_cache(self) -> None:
        data = self.config.data
        self.cache: FeatureCache | None = None
        self.train_dataset = self.train_base
        if not data.feature_cache:
            return
        self.cache = FeatureCache(data.feature_cache, self.model, data.feature_cache_dtype)
        indices = range(self.ctx.rank, len(self.train_base), self.ctx.world_size)
        stats = self.cache.fill(self.model, self.train_base, self.device, indices=indices,
                                batch_size=max(1, data.batch_size // self.ctx.world_size), progress=self.progress)
        self.cache_fill_stats = stats
        self.ctx.barrier()  # every rank's share is on disk before anyone reads
        self.train_dataset = CachedFeatureDataset(self.train_base, self.cache, hflip=data.augment.flip)

    def _setup_loaders(self) -> None:
        data, ctx = self.config.data, self.ctx
        if data.batch_size % ctx.world_size:
            raise ValueError(
                f"data.batch_size={data.batch_size} (the global batch) does not divide by {ctx.world_size} processes"
            )
        per_rank = data.batch_size // ctx.world_size
        # The order is a function of (seed, epoch) alone (set_epoch), in one process as in many.
        self.sampler = DistributedSampler(
            self.train_dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
            seed=self.config.run.seed, drop_last=data.drop_last,
        )
        self.data_generator = torch.Generator().manual_seed(self.config.run.seed + 7919 * ctx.rank)
        self.train_loader = DataLoader(
            self.train_dataset,
            batch_size=per_rank,
            sampler=self.sampler,
            num_workers=data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=data.drop_last,
            worker_init_fn=seed_worker,
            generator=self.data_generator,
        )
        steps = len(self.train_loader)
        if self.config.train.max_steps_per_epoch:
            steps = min(steps, self.config.train.max_steps_per_epoch)
        if steps == 0:
            raise ValueError(
                f"{len(self.train_dataset)} training images give no full batch of {per_rank} per process; "
                "lower data.batch_size or set data.drop_last=false"
            )
        self.steps_per_epoch = steps

    def _setup_optimisation(self) -> None:
        optim, train = self.config.optim, self.config.train
        decoder = self.model.decoder
        self.params = [p for p in decoder.parameters() if p.requires_grad]
        # Only the decoder trains: the optimiser never sees a backbone parameter.
        self.optimizer = torch.optim.AdamW(
            self.params, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay
        )
        self.schedule = WarmupCosine.from_fraction(
            optim.lr, optim.min_lr, train.epochs * self.steps_per_epoch, optim.warmup_fraction
        )
        self.train_decoder: nn.Module = LossInputs(decoder, tuple(self.config.loss.aux_weights))
        if self.ctx.distributed:
            self.train_decoder = DistributedDataParallel(
                self.train_decoder,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=not all(self.train_decoder.used_aux),
            )
        # After DDP: its constructor broadcast rank 0's weights, the EMA starts from those.
        self.ema = DecoderEMA(decoder, optim.ema_decay) if optim.ema_decay > 0 else None
        amp = train.amp if self.device.type == "cuda" else "off"
        if train.amp != "off" and amp == "off":
            logger.warning("train.amp=%s needs CUDA; training in fp32 on %s", train.amp, self.device)
        self.amp_dtype = AMP_DTYPES.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    def _validation_protocol(self) -> EvalProtocol:
        val = self.config.val
        overrides = dict(val.protocol_overrides)
        preset = get_protocol(val.protocol)
        if preset.resolution == "release" and "train_size" not in overrides and self.config.data.augment.crop_size:
            overrides["train_size"] = tuple(self.config.data.augment.crop_size)
        return get_protocol(val.protocol, **overrides)

    # ------------------------------------------------------------------ resume

    def _load_resume_state(self, state: ResumeState) -> None:
        self.model.decoder.load_state_dict(state.decoder)
        if self.ema is not None and state.ema is not None:
            self.ema.load_state_dict(state.ema)
        self.optimizer.load_state_dict(state.optimizer)
        self.epoch = state.epoch
        self.global_step = state.global_step
        self.counters.update(state.counters)
        self.best = dict(state.best)
        self.history = list(state.history)
        if state.world_size == self.ctx.world_size and len(state.rng) > self.ctx.rank:
            rank_state = state.rng[self.ctx.rank]
            self.data_generator.set_state(rank_state["data_generator"])
            restore_rng_state(rank_state)  # last: everything above may have drawn random numbers
        else:
            logger.warning(
                "resume state was written by %d processes, this run has %d: random streams restart from the "
                "seed, so the continuation is valid but not bit-identical", state.world_size, self.ctx.world_size
            )
        logger.info("resumed %s after epoch %d (step %d)", self.run_dir, self.epoch, self.global_step)

    def _resume_state(self) -> ResumeState:
        rank_state = capture_rng_state()
        rank_state["data_generator"] = self.data_generator.get_state()
        all_rng = self.ctx.gather_objects(rank_state)
        return ResumeState(
            config=self.config.to_dict(),
            epoch=self.epoch,
            global_step=self.global_step,
            decoder={k: v.detach().cpu().clone() for k, v in self.model.decoder.state_dict().items()},
            ema=None if self.ema is None else {k: v.detach().cpu().clone() for k, v in self.ema.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            rng=all_rng,
            sampler_seed=self.config.run.seed,
            counters=dict(self.counters),
            best=dict(self.best),
            history=list(self.history),
            world_size=self.ctx.world_size,
            schedule=self.schedule.state_dict(),
        )

    # ------------------------------------------------------------------ one iteration

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor | None] | None, torch.Tensor]:
        gt = batch["depth"].to(self.device, non_blocking=True)
        size = (int(gt.shape[-2]), int(gt.shape[-1]))  # predict at the crop size (= ground-truth size)
        with self._autocast():
            if self.cache is not None:
                features = batch_to_features(batch, self.cache.grid, self.device)
            else:
                images = batch["image"].to(self.device, non_blocking=True)
                model = self.model
                features = model.forward_features(resize_and_normalize(images, model.input_size, model.mean, model.std))
            depth, aux = self.train_decoder(features.hidden, features.global_features, features.grid, size)
        aux_fp32 = None if aux is None else [a.float() if a is not None else None for a in aux]
        return depth.float(), aux_fp32, gt

    def train_step(self, batch: dict[str, Any]) -> StepResult:
        # The forward pass updates batch-norm running statistics; a skipped step must not keep
        # them (a NaN batch would otherwise poison every later evaluation). They are tiny to copy.
        buffers = [b.detach().clone() for b in self.model.decoder.buffers()]
        pred, aux, gt = self._forward(batch)
        total, parts = self.loss_fn(pred, aux, gt)
        # Every rank must take the same branch, or DDP's gradient all-reduce would hang.
        if not self.ctx.all_true(is_finite_loss(total)):
            if self.ctx.distributed:
                # DDP expects a backward after every forward (its reduction would otherwise fail on
                # the next step); a zero connected to every output completes it, and the
                # (meaningless) gradients are then thrown away.
                outputs = [pred] + [a for a in aux or [] if a is not None]
                sum(zero_loss_like(o) for o in outputs).backward()
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_buffers(buffers)
            return StepResult(parts, None, "nonfinite_loss")
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.optim.grad_clip_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip if clip > 0 else math.inf)
        # Gradients are already all-reduced, so every rank sees the same norm.
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
            self._restore_buffers(buffers)
            return StepResult(parts, float(grad_norm), "nonfinite_grad")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model.decoder)
        return StepResult(parts, float(grad_norm), None)

    @torch.no_grad()
    def _restore_buffers(self, saved: list[torch.Tensor]) -> None:
        for buffer, value in zip(self.model.decoder.buffers(), saved):
            buffer.copy_(value)

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self) -> dict[str, float]:
        from tqdm import tqdm

        self.sampler.set_epoch(self.epoch)
        self.train_base.set_epoch(self.epoch)
        self.model.train()  # the backbone stays in eval mode by construction
        sums: dict[str, torch.Tensor] = {}
        steps = skipped = 0
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{self.config.train.epochs}",
                   disable=not self.progress, leave=False)
        for index, batch in enumerate(self.train_loader):
            if index >= self.steps_per_epoch:
                break
            lr = self.schedule.apply(self.optimizer, self.global_step)
            result = self.train_step(batch)
            self.global_step += 1
            if result.skipped:
                self.counters[result.skipped] += 1
                skipped += 1
                logger.warning("step %d skipped (%s)", self.global_step, result.skipped.replace("_", " "))
            else:
                steps += 1
                for key, value in result.parts.items():
                    sums[key] = sums.get(key, torch.zeros((), device=self.device)) + value.detach().float()
            if self.global_step % max(1, self.config.log.every_steps) == 0:
                scalars = {f"loss_{k}" if k != "total" else "loss": float(v) for k, v in result.parts.items()}
                scalars.update(lr=lr, skipped_steps=sum(self.counters.values()))
                if result.grad_norm is not None:
                    scalars["grad_norm"] = result.grad_norm
                self.tb.scalars("train", scalars, self.global_step)
            bar.update(1)
            if not result.skipped:
                bar.set_postfix(loss=f"{float(result.parts['total']):.4f}", lr=f"{lr:.2e}")
        bar.close()
        return self._reduce_epoch_losses(sums, steps, skipped)

    def _reduce_epoch_losses(self, sums: dict[str, torch.Tensor], steps: int, skipped: int) -> dict[str, float]:
        keys = sorted(sums)
        vector = torch.stack([sums[k] for k in keys] + [torch.tensor(float(steps), device=self.device),
                                                        torch.tensor(float(skipped), device=self.device)])
        vector = self.ctx.all_reduce_sum(vector.to(self.ctx.reduce_device, torch.float64)).cpu()
        total_steps = max(float(vector[-2]), 1.0)
        out = {key: float(vector[i]) / total_steps for i, key in enumerate(keys)}
        out["steps"] = float(vector[-2]) / self.ctx.world_size
        out["skipped"] = float(vector[-1]) / self.ctx.world_size
        return out

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

    # ------------------------------------------------------------------ checkpoints

    def _choose_weights(self, results: dict[str, EvalResult]) -> str:
        if not results:
            return "ema" if self.ema is not None else "raw"

        def score(name: str) -> float:
            value = results[name].abs_rel
            return value if math.isfinite(value) else math.inf

        return min(results, key=score)  # ties keep the raw weights (first)

    def _weights(self, name: str) -> dict[str, torch.Tensor]:
        module = self.ema.module if name == "ema" and self.ema is not None else self.model.decoder
        return module.state_dict()

    def _record(self, chosen: str, results: dict[str, EvalResult]) -> CheckpointRecord:
        config = self.config
        metrics: dict[str, Any] = {}
        if results:
            result = results[chosen]
            metrics = {**result.aggregate, "protocol": result.protocol.name,
                       "protocol_description": result.protocol.describe(),
                       "split": "validation (scenes held out of the training list)",
                       "images": result.images_scored}
        record = make_record(
            self.model,
            train_focal=self.train_focal,
            train_image_size=[int(v) for v in self.train_image_size],
            dataset=f"{config.data.dataset}: {self.paths.train_split or self.paths.data_path}",
            min_depth=config.loss.min_depth,
            max_depth=config.loss.max_depth,
            metrics=metrics,
            extra={
                "weights": chosen,
                "epoch": self.epoch,
                "global_step": self.global_step,
                "validation": {name: r.aggregate for name, r in results.items()},
                "run_dir": str(self.run_dir),
                "config": config.to_dict(),
            },
        )
        if self.backbone_file is not None:
            record.model["backbone"]["pretrained"] = str(self.backbone_file)
        return record

    def _save_epoch(self, results: dict[str, EvalResult], summary: dict[str, Any]) -> None:
        chosen = summary["weights"]
        resume_state = self._resume_state()  # collective (gathers every rank's RNG state)
        self.ctx.barrier()
        if self.ctx.is_main:
            record = self._record(chosen, results)
            save_checkpoint(self.run_dir / "last", self._weights(chosen), record)
            if summary["is_best"]:
                save_checkpoint(self.run_dir / "best", self._weights(chosen), self._record(chosen, results))
                write_eval_report(results[chosen], self.run_dir, {"checkpoint": str(self.run_dir / "best"),
                                  "dataset": "validation", "weights": chosen, "epoch": self.epoch},
                                  stem="best_validation")
            save_resume_state(self.run_dir / RESUME_FILE, resume_state)
            with (self.run_dir / "history.jsonl").open("a") as handle:
                handle.write(json.dumps(summary) + "\n")
        self.ctx.barrier()  # nobody moves on (or exits) while rank 0 is still writing

    # ------------------------------------------------------------------ the run

    def fit(self, stop_after_epochs: int | None = None) -> TrainSummary:
        """Train the remaining epochs (or only ``stop_after_epochs`` of them in this session)."""
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.config))
        with self._determinism():
            self._run_epochs(stop_after_epochs)
        self.tb.close()
        return TrainSummary(self.run_dir, self.epoch, self.global_step, dict(self.best), list(self.history),
                            dict(self.counters))

    def _run_epochs(self, stop_after_epochs: int | None) -> None:
        epochs = self.config.train.epochs
        done_this_session = 0
        while self.epoch < epochs:
            if stop_after_epochs is not None and done_this_session >= stop_after_epochs:
                logger.info("stopping after %d epoch(s) as asked; continue with --resume %s",
                            done_this_session, self.run_dir)
                break
            started = time.perf_counter()
            train_stats = self.train_epoch()
            results = self.validate()
            self.epoch += 1
            done_this_session += 1
            chosen = self._choose_weights(results)
            score = results[chosen].abs_rel if results else math.nan
            is_best = bool(results) and math.isfinite(score) and score < self.best["abs_rel"]
            if is_best:
                self.best = {"abs_rel": score, "epoch": self.epoch, "weights": chosen}
            summary = {
                "epoch": self.epoch,
                "global_step": self.global_step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train": train_stats,
                "val": {name: r.aggregate for name, r in results.items()},
                "weights": chosen,
                "is_best": is_best,
                "counters": dict(self.counters),
                "bad_samples": len(self.train_base.skipped),
                "seconds": round(time.perf_counter() - started, 3),
            }
            self.history.append(summary)
            self._log_epoch(summary, results, chosen)
            self._save_epoch(results, summary)

    def _log_epoch(self, summary: dict[str, Any], results: dict[str, EvalResult], chosen: str) -> None:
        if not self.ctx.is_main:
            return
        step = self.global_step
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
            self.tb.image("val/input_gt_prediction", grid, self.epoch)
        self.tb.flush()
        self.train_base.log_skipped()
        val = " ".join(f"{name} AbsRel {r.abs_rel:.4f}" for name, r in results.items())
        logger.info("epoch %d/%d: loss %.4f, %s -> %s weights%s (%.1f s)", self.epoch, self.config.train.epochs,
                    summary["train"].get("total", math.nan), val or "no validation", chosen,
                    " (new best)" if summary["is_best"] else "", summary["seconds"])
