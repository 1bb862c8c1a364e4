"""Builds the parts of a training run from its :class:`TrainConfig`: data, backbone, cache, optimisation.

Each function builds one part; :class:`~space_clip_ros.training.trainer.Trainer` calls them in
order (the order matters for the random streams: see ``Trainer.__init__``). Paths, synthetic
generation and the validation holdout themselves are ``data_setup``'s, shared with the evaluation CLI.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ..model import SpaceClip, save_vision_weights
from . import data_setup
from .config import TrainConfig
from .datasets import DepthDataset
from .distributed import DistContext
from .ema import DecoderEMA
from .feature_cache import CachedFeatureDataset, CacheStats, FeatureCache
from .protocol import EvalProtocol, get_protocol
from .schedule import WarmupCosine
from .step import LossInputs, Optimisation

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
RANDOM_BACKBONE_FILE = "backbone_random_weights.safetensors"


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for the run only (the flag is process-wide)."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # Warn-only on CUDA: bilinear upsampling's backward has no deterministic CUDA kernel.
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


@dataclass
class RunData:
    """The run's datasets and the facts about them that the checkpoint records.

    Attributes:
        paths: resolved data roots and split files.
        train_base: the training dataset (before any feature cache).
        val_dataset: the held-out scenes, or ``None`` with ``data.val_fraction: 0``.
        train_focal: median focal length of the training list (pixels).
        train_image_size: [height, width] the model saw in training (the crop, or the whole image).
    """

    paths: data_setup.DataPaths
    train_base: DepthDataset
    val_dataset: DepthDataset | None
    train_focal: float | None
    train_image_size: list[int]


def build_data(config: TrainConfig, run_dir: Path, context: DistContext, progress: bool) -> RunData:
    """Generate synthetic data if asked, hold out validation scenes, build both datasets.

    The lists used are written to ``run_dir/splits/`` for the record (rank 0); the datasets are
    given the lists themselves, so nothing waits for, or re-reads, those files.
    """
    data = config.data
    with context.main_first():
        if context.is_main:
            data_setup.ensure_synthetic_dataset(data, progress=progress)
    paths = data_setup.resolve_data_paths(data)
    entries = data_setup.read_train_entries(data, paths)
    train_entries, val_entries = data_setup.split_train_validation(entries, data.val_fraction, data.val_seed)
    split_dir = run_dir / "splits"
    if context.is_main:
        data_setup.write_entries(split_dir / "train.txt", train_entries)
        if val_entries:
            data_setup.write_entries(split_dir / "val.txt", val_entries)
    loss = config.loss
    train_base = data_setup.train_dataset(
        data, paths, train_entries, loss.min_depth, loss.max_depth, config.run.seed,
        augment=data_setup.cache_augment(data.augment) if data.feature_cache else None,
        list_name=split_dir / "train.txt",
    )
    val_dataset = (
        data_setup.eval_dataset(data.dataset, paths.data_path, paths.gt_path, split_dir / "val.txt", data.depth_scale,
                                entries=val_entries)
        if val_entries
        else None
    )
    crop = data.augment.crop_size if data.augment.crop else None
    train_image_size = list(crop) if crop else list(train_base[0]["depth"].shape[-2:])
    logger.info("training on %d images, validating on %d (held-out scenes)",
                len(train_base), 0 if val_dataset is None else len(val_dataset))
    return RunData(paths, train_base, val_dataset, data_setup.training_focal(train_entries),
                   [int(v) for v in train_image_size])


def keep_random_backbone(config: TrainConfig, model: SpaceClip, run_dir: Path, context: DistContext) -> Path | None:
    """Save a random-weight backbone beside the checkpoints, so that they can be used elsewhere.

    Random weights (``pretrained: null``, tests and the synthetic quick start) are drawn anew in
    every process; a checkpoint is only meaningful with the exact backbone it was trained on.
    The record then names this file as the backbone's weights.
    """
    if config.model.backbone.pretrained is not None:
        return None
    path = (run_dir / RANDOM_BACKBONE_FILE).resolve()
    if context.is_main and not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_vision_weights(model.backbone, path)
        logger.warning("backbone has random weights; saved them to %s (the checkpoints refer to this file)", path)
    return path


@dataclass
class CacheSetup:
    """The feature cache (``None`` without ``data.feature_cache``) and the dataset the loop reads."""

    cache: FeatureCache | None
    train_dataset: torch.utils.data.Dataset
    fill_stats: CacheStats | None = None


def build_cache(
    config: TrainConfig, model: SpaceClip, train_base: DepthDataset, context: DistContext, progress: bool
) -> CacheSetup:
    """Fill the cache (each rank its share) and read training features from it; no-op without one."""
    data = config.data
    if not data.feature_cache:
        return CacheSetup(None, train_base)
    cache = FeatureCache(data.feature_cache, model, data.feature_cache_dtype)
    indices = range(context.rank, len(train_base), context.world_size)
    stats = cache.fill(model, train_base, context.device, indices=indices,
                       batch_size=max(1, data.batch_size // context.world_size), progress=progress)
    context.barrier()  # every rank's share is on disk before anyone reads
    return CacheSetup(cache, CachedFeatureDataset(train_base, cache, hflip=data.augment.flip), stats)


def build_optimisation(
    config: TrainConfig, model: SpaceClip, context: DistContext, steps_per_epoch: int
) -> Optimisation:
    """AdamW over the decoder, the warm-up + cosine schedule, DDP wrapping, EMA and AMP."""
    optim, train = config.optim, config.train
    device = context.device
    decoder = model.decoder
    params = [p for p in decoder.parameters() if p.requires_grad]
    # Only the decoder trains: the optimiser never sees a backbone parameter.
    optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                  weight_decay=optim.weight_decay)
    schedule = WarmupCosine.from_fraction(optim.lr, optim.min_lr, train.epochs * steps_per_epoch,
                                          optim.warmup_fraction)
    train_decoder: torch.nn.Module = LossInputs(decoder, tuple(config.loss.aux_weights))
    if context.distributed:
        train_decoder = DistributedDataParallel(
            train_decoder,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not all(train_decoder.used_aux),
        )
    # After DDP: its constructor broadcast rank 0's weights, the EMA starts from those.
    ema = DecoderEMA(decoder, optim.ema_decay) if optim.ema_decay > 0 else None
    amp = train.amp if device.type == "cuda" else "off"
    if train.amp != "off" and amp == "off":
        logger.warning("train.amp=%s needs CUDA; training in fp32 on %s", train.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    return Optimisation(params, optimizer, schedule, train_decoder, ema, scaler, AMP_DTYPES.get(amp),
                        optim.grad_clip_norm)


def validation_protocol(config: TrainConfig) -> EvalProtocol:
    """``val.protocol`` with its overrides; the release resolution takes the training crop's size."""
    val = config.val
    overrides = dict(val.protocol_overrides)
    preset = get_protocol(val.protocol)
    if preset.resolution == "release" and "train_size" not in overrides and config.data.augment.crop_size:
        overrides["train_size"] = tuple(config.data.augment.crop_size)
    return get_protocol(val.protocol, **overrides)
