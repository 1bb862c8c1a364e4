"""Decoder checkpoints: weights as safetensors beside a JSON record of everything needed to use them.

``name.safetensors`` holds the decoder's state dict (trainable parameters and batch-norm running
statistics; never the frozen backbone). ``name.json`` holds a :class:`CheckpointRecord`. Loading
needs neither the training code nor the optimiser state (the trainer keeps that in its own file).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..fileio import atomic_write, atomic_write_text
from .config import BackboneConfig, DecoderConfig, ModelConfig

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "space_clip_ros.decoder"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model it is loaded into."""


@dataclass
class CheckpointRecord:
    """The JSON side of a checkpoint.

    Attributes:
        model: backbone and decoder configuration (``ModelConfig.to_dict()``).
        mean, std: normalisation the decoder was trained with (the backbone's).
        encoder_input_size: (H, W) the encoder saw during training.
        train_focal: focal length (pixels) of the training camera, at ``train_image_size``;
            deployment rescales depth by f_camera / train_focal (SPEC section 6).
        train_image_size: (H, W) of the training images the focal refers to.
        dataset: name or description of the training data.
        min_depth, max_depth: the depth range the model was trained for (metres).
        metrics: validation metrics of this checkpoint (e.g. abs_rel), with their protocol.
        extra: anything else (epoch, step, which weights - raw or EMA).
    """

    model: dict[str, Any]
    mean: list[float]
    std: list[float]
    encoder_input_size: list[int]
    train_focal: float | None = None
    train_image_size: list[int] | None = None
    dataset: str | None = None
    min_depth: float = 1e-3
    max_depth: float = 80.0
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = CHECKPOINT_FORMAT
    version: int = CHECKPOINT_VERSION
    created: str = ""

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointRecord:
        if data.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"not a space_clip_ros decoder record (format={data.get('format')!r})")
        if int(data.get("version", 0)) > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"checkpoint version {data['version']} is newer than this package reads ({CHECKPOINT_VERSION}); "
                "upgrade space_clip_ros"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, record) paths for ``name``, ``name.safetensors`` or ``name.json``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in {".safetensors", ".json"} else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(
    path: str | os.PathLike, decoder_state: dict[str, torch.Tensor], record: CheckpointRecord
) -> Path:
    """Write decoder weights and record atomically; returns the weights path."""
    weights_path, record_path = checkpoint_paths(path)
    if any(key.startswith("backbone.") or key.startswith("visual.") for key in decoder_state):
        raise CheckpointError("refusing to write backbone weights into a decoder checkpoint")
    record.created = record.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    tensors = {k: v.detach().contiguous().cpu() for k, v in decoder_state.items()}
    metadata = {"format": CHECKPOINT_FORMAT, "version": str(CHECKPOINT_VERSION)}
    # Atomic: the node may load this checkpoint while training writes the next one.
    atomic_write(weights_path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    text = json.dumps(record.to_dict(), indent=2, sort_keys=True)
    atomic_write_text(record_path, text + "\n")
    logger.info("saved decoder checkpoint %s", weights_path)
    return weights_path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], CheckpointRecord]:
    """Read a decoder checkpoint (weights and record)."""
    weights_path, record_path = checkpoint_paths(path)
    for needed in (weights_path, record_path):
        if not needed.is_file():
            raise CheckpointError(
                f"decoder checkpoint file missing: {needed}. A checkpoint is a pair NAME.safetensors + "
                "NAME.json as written by space-clip-train; check the path, or leave the checkpoint empty "
                "to run with an untrained decoder"
            )
    try:
        record = CheckpointRecord.from_dict(json.loads(record_path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint record {record_path} is unreadable: {exc}") from exc
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"checkpoint weights {weights_path} are unreadable: {exc}") from exc
    return state, record


def describe_mismatch(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts."""
    diffs = []
    for key in sorted(set(expected) | set(found)):
        name = f"{prefix}{key}"
        a, b = expected.get(key, "<absent>"), found.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.extend(describe_mismatch(a, b, prefix=f"{name}."))
        elif a != b:
            diffs.append(f"{name}: model has {a!r}, checkpoint has {b!r}")
    return diffs


def check_compatible(record: CheckpointRecord, backbone: BackboneConfig, decoder: DecoderConfig | None) -> None:
    """Raise :class:`CheckpointError` naming every difference between a record and a model's config."""
    ckpt = record.model_config
    diffs = describe_mismatch(backbone.identity(), ckpt.backbone.identity(), prefix="backbone.")
    if decoder is not None:
        diffs += describe_mismatch(decoder.to_dict(), ckpt.decoder.to_dict(), prefix="decoder.")
    if diffs:
        raise CheckpointError("checkpoint does not fit this model:\n  " + "\n  ".join(diffs))


def load_decoder_state(decoder: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights into a decoder, explaining missing, unexpected or mis-shaped tensors."""
    own = decoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: model {tuple(own[k].shape)} vs checkpoint {tuple(state[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[:3]})")
        raise CheckpointError("decoder weights do not fit: " + "; ".join(parts))
    decoder.load_state_dict(state)


def hash_weights(digest: Any, module: torch.nn.Module) -> Any:
    """Feed every tensor of ``module``'s state (weights and buffers, by name, in name order) to a
    ``hashlib`` object ``digest`` and return it: what the feature cache, backend auto's cache and
    the ONNX graph cache key their entries by (each with its own hash and what else it adds)."""
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest
