"""Training configuration: dataclasses loaded from YAML, with ``key=value`` dotted overrides.

A run is fully described by one :class:`TrainConfig`. It is read from a YAML file whose sections
mirror the dataclasses below; every key is checked (an unknown key is an error naming the key and
the keys that are valid there), and values are coerced to the declared types (YAML 1.1 reads
``1e-4`` as a string; we accept it as a float). Command-line overrides use the same dotted names::

    space-clip-train --config config/train/nyu.yaml optim.lr=2e-4 data.batch_size=8

The model section reuses the model's own :class:`BackboneConfig` / :class:`DecoderConfig` and the
loss section the loss's own :class:`LossConfig`, so there is one definition of each setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..model.config import ModelConfig
from .augment import AugmenterConfig
from .losses import LossConfig
from .protocol import protocol_names

# Keys whose change is allowed when a run is resumed: they do not change what the run computes
# (``train.epochs`` changes the schedule's length from the resume point on; see docs/training.md;
# ``train.resume_every_steps`` only changes when the resume state is written).
RESUME_HARMLESS_KEYS: tuple[str, ...] = (
    "run.out_dir",
    "train.epochs",
    "train.resume_every_steps",
    "data.num_workers",
    "val.num_workers",
    "val.batch_size",
    "log.",
)


class ConfigError(ValueError):
    """A configuration file or override that does not fit :class:`TrainConfig`."""


@dataclass
class RunConfig:
    """Identity of a run.

    Attributes:
        name: run name; the run directory is ``out_dir/name`` unless the CLI's ``--out`` is given.
        seed: seeds torch, numpy, python's ``random`` and the data order.
        out_dir: parent folder of run directories.
    """

    name: str = "space_clip"
    seed: int = 42
    out_dir: str = "runs"


@dataclass
class SyntheticDataConfig:
    """Generate a synthetic dataset in ``data.dataset``'s real layout when it is missing.

    Attributes:
        root: where to write it (``data.data_path``/``gt_path``/``train_split`` are derived from it
            when left empty).
        n_train, n_test: number of frames.
        n_scenes: NYU: scene directories (the by-scene validation needs several); KITTI: drives.
        height, width: rendered size; the camera is the dataset's real one scaled to this size.
        seed: scene seed.
    """

    root: str = "data/synthetic_nyu"
    n_train: int = 96
    n_test: int = 16
    n_scenes: int = 8
    height: int = 64
    width: int = 96
    seed: int = 0


@dataclass
class DataConfig:
    """Where the training data is and how it is batched.

    Attributes:
        dataset: ``kitti``, ``nyu`` or ``folder`` (a team's own camera, see docs/training.md).
        data_path: root the split file's RGB paths are relative to (NYU: ``<root>/sync``).
        gt_path: root of the depth paths (KITTI: ``data_depth_annotated``); empty = ``data_path``.
        train_split: BTS split file (``rgb depth focal`` per line); empty for a folder dataset
            (every frame of ``rgb/``). Validation is held out of it by scene.
        val_fraction, val_seed: by-scene holdout (``training.splits.holdout_validation``).
        test_split, test_data_path, test_gt_path: the test list and its roots (empty roots = the
            training ones); read by ``space-clip-eval --config``, never by training.
        depth_scale: PNG value / depth_scale = metres; ``null`` = the dataset kind's default.
        kb_crop: BTS's bottom-centred 352x1216 KITTI crop before augmenting; ``null`` = on for KITTI.
        augment: the training augmentation (``training.augment.AugmenterConfig``); its
            ``crop_size`` is the training crop: prediction and loss are at that size, and it is
            recorded in the checkpoint as the training image size (``null`` = the whole image).
        batch_size: GLOBAL batch (summed over all processes; must divide by the world size).
        num_workers: DataLoader worker processes per training process.
        drop_last: drop the last incomplete batch of an epoch (equal batch statistics for BN).
        feature_cache: folder of the frozen backbone's cached outputs; ``null`` = no cache. With a
            cache, rotation, colour jitter and random crops are disabled (see docs/training.md).
        feature_cache_dtype: ``float16`` (half the disk, features rounded) or ``float32`` (exact).
        synthetic: generate a synthetic dataset first when it is missing (quick start, tests).
    """

    dataset: str = "nyu"
    data_path: str = ""
    gt_path: str = ""
    train_split: str = ""
    val_fraction: float = 0.1
    val_seed: int = 20260926
    test_split: str = ""
    test_data_path: str = ""
    test_gt_path: str = ""
    depth_scale: float | None = None
    kb_crop: bool | None = None
    augment: AugmenterConfig = field(default_factory=AugmenterConfig.nyu)
    batch_size: int = 32
    num_workers: int = 4
    drop_last: bool = True
    feature_cache: str | None = None
    feature_cache_dtype: str = "float16"
    synthetic: SyntheticDataConfig | None = None


@dataclass
class OptimConfig:
    """Optimiser, schedule and weight averaging of the release (SPEC section 4).

    Attributes:
        lr, weight_decay, betas, eps: AdamW over the decoder's parameters only.
        warmup_fraction: linear warm-up over this fraction of all iterations, then cosine decay.
        min_lr: floor of the cosine decay.
        grad_clip_norm: clip the global gradient norm to this (0 disables).
        ema_decay: EMA of decoder parameters and BN buffers (0 disables the EMA).
    """

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_fraction: float = 0.05
    min_lr: float = 1e-6
    grad_clip_norm: float = 1.0
    ema_decay: float = 0.996


@dataclass
class TrainSection:
    """Loop settings.

    Attributes:
        epochs: number of epochs (release: 20).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun, each process takes its
            ``LOCAL_RANK`` GPU).
        amp: ``off`` (fp32, reproduces the paper), ``bf16`` or ``fp16`` autocast (CUDA only).
        deterministic: ``torch.use_deterministic_algorithms`` (warn-only on CUDA, where some
            upsampling backward kernels have no deterministic version).
        max_steps_per_epoch: cap the iterations of an epoch (smoke tests); ``null`` = whole epoch.
        resume_every_steps: also write the resume state every N optimiser steps (a killed run then
            loses at most N steps); 0 = only after each epoch.
    """

    epochs: int = 20
    device: str = "auto"
    amp: str = "off"
    deterministic: bool = False
    max_steps_per_epoch: int | None = None
    resume_every_steps: int = 0


@dataclass
class ValConfig:
    """Per-epoch validation on the held-out scenes.

    Attributes:
        protocol: a preset of ``training.protocol`` (``nyu_eigen``, ``kitti_eigen``, ``custom``...).
        protocol_overrides: fields replacing the preset's (e.g. ``{max_depth_eval: 20}``).
        batch_size, num_workers: evaluation batching.
        ema: also evaluate the EMA weights (the better of raw/EMA is kept as ``best``).
    """

    protocol: str = "nyu_eigen"
    protocol_overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    num_workers: int = 2
    ema: bool = True


@dataclass
class LogConfig:
    """Logging: TensorBoard scalars every ``every_steps`` iterations, ``num_images`` images per epoch."""

    tensorboard: bool = True
    every_steps: int = 20
    num_images: int = 4
    progress: bool = True


@dataclass
class TrainConfig:
    """Everything a training run needs."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)
    val: ValConfig = field(default_factory=ValConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def flat(self) -> dict[str, Any]:
        """``{"optim.lr": 1e-4, ...}``: every leaf under its dotted name."""
        return flatten(self.to_dict())

    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name


# ------------------------------------------------------------------------------------------------
# Validation of values that the types alone do not catch.

DATASETS = ("kitti", "nyu", "folder")
AMP_MODES = ("off", "bf16", "fp16")
CACHE_DTYPES = ("float16", "float32")


def validate(config: TrainConfig) -> None:
    data, optim, train = config.data, config.optim, config.train
    problems = []
    if data.dataset not in DATASETS:
        problems.append(f"data.dataset must be one of {DATASETS}, got {data.dataset!r}")
    crop = data.augment.crop_size
    if crop is not None and (len(crop) != 2 or min(crop) <= 0):
        problems.append(f"data.augment.crop_size must be [height, width] > 0 or null, got {list(crop)}")
    if data.batch_size <= 0:
        problems.append(f"data.batch_size must be > 0, got {data.batch_size}")
    if not 0.0 <= data.val_fraction < 1.0:
        problems.append(f"data.val_fraction must be in [0, 1), got {data.val_fraction}")
    if data.feature_cache_dtype not in CACHE_DTYPES:
        problems.append(f"data.feature_cache_dtype must be one of {CACHE_DTYPES}, got {data.feature_cache_dtype!r}")
    if train.amp not in AMP_MODES:
        problems.append(f"train.amp must be one of {AMP_MODES}, got {train.amp!r}")
    if train.epochs <= 0:
        problems.append(f"train.epochs must be > 0, got {train.epochs}")
    if train.resume_every_steps < 0:
        problems.append(f"train.resume_every_steps must be >= 0 (0 = after each epoch only), "
                        f"got {train.resume_every_steps}")
    if not 0.0 <= optim.warmup_fraction < 1.0:
        problems.append(f"optim.warmup_fraction must be in [0, 1), got {optim.warmup_fraction}")
    if not 0.0 <= optim.ema_decay < 1.0:
        problems.append(f"optim.ema_decay must be in [0, 1), got {optim.ema_decay}")
    if optim.min_lr > optim.lr:
        problems.append(f"optim.min_lr ({optim.min_lr}) is above optim.lr ({optim.lr})")
    if config.val.protocol not in protocol_names():
        problems.append(f"val.protocol must be one of {protocol_names()}, got {config.val.protocol!r}")
    if problems:
        raise ConfigError("invalid training configuration:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------------
# Loading: YAML + overrides -> nested dict -> dataclasses (every key checked, values coerced).


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, data, "")


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (``[1, 2]``, ``null``, ``true``)."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form key=value (e.g. optim.lr=2e-4)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {exc}") from exc
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a dict, refusing unknown keys and coercing values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys in {where}: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from exc


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        errors = []
        for candidate in candidates:
            try:
                return _coerce(value, candidate, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{name}: {value!r} fits none of {candidates}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{name}.")
    if hint is Any:
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{name}: expected {len(args)} values, got {list(value)}")
            items = [_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_hint = args[0] if args else Any
            items = [_coerce(v, item_hint, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------
# Plain forms, flattening and differences (resume checks, records).


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    return obj


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every leaf that differs between two ``to_dict()`` forms."""
    flat_old, flat_new = flatten(old), flatten(new)
    missing = object()
    diffs = {}
    for key in sorted(set(flat_old) | set(flat_new)):
        a, b = flat_old.get(key, missing), flat_new.get(key, missing)
        if a != b:
            diffs[key] = (None if a is missing else a, None if b is missing else b)
    return diffs


def is_harmless_on_resume(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_HARMLESS_KEYS)


def dump_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
