"""Build SPACE-CLIP models from configs or checkpoints (the one way callers get a model)."""

from __future__ import annotations

import logging
import os
from typing import Any

from .checkpoint import CheckpointRecord, check_compatible, load_checkpoint, load_decoder_state
from .config import BackboneConfig, DecoderConfig, ModelConfig
from .space_clip import SpaceClip

logger = logging.getLogger(__name__)


def create_model(config: ModelConfig) -> SpaceClip:
    """A model with the configured backbone weights and a freshly initialised decoder."""
    return SpaceClip(config)


def load_model(
    checkpoint: str | os.PathLike | None,
    backbone: BackboneConfig | None = None,
    decoder: DecoderConfig | None = None,
) -> tuple[SpaceClip, CheckpointRecord | None]:
    """Build a model and load a decoder checkpoint into it.

    Args:
        checkpoint: decoder checkpoint (``NAME``, ``NAME.safetensors`` or ``NAME.json``), or ``None``
            for an untrained decoder (logged at WARNING).
        backbone: the backbone to use; defaults to the checkpoint's. Given explicitly, it must have
            the same identity (model, weights tag or file name, overrides) as the checkpoint's,
            which lets a robot point at its own copy of the same weights file.
        decoder: expected decoder config; defaults to the checkpoint's. Given explicitly, it must
            equal the checkpoint's.

    Raises:
        CheckpointError: missing/unreadable files, or a checkpoint that does not fit (every
            difference is named).
    """
    if checkpoint is None or str(checkpoint) == "":
        config = ModelConfig(backbone=backbone or BackboneConfig(), decoder=decoder or DecoderConfig())
        logger.warning(
            "no decoder checkpoint given: the decoder has RANDOM weights, so depth values are meaningless "
            "(train one with space-clip-train, or pass a checkpoint)"
        )
        return create_model(config), None

    state, record = load_checkpoint(checkpoint)
    stored = record.model_config
    check_compatible(record, backbone or stored.backbone, decoder)
    config = ModelConfig(backbone=backbone or stored.backbone, decoder=stored.decoder)
    model = create_model(config)
    load_decoder_state(model.decoder, state)
    logger.info("loaded decoder checkpoint %s (dataset: %s)", checkpoint, record.dataset or "unknown")
    return model, record


def make_record(model: SpaceClip, **fields: Any) -> CheckpointRecord:
    """A checkpoint record describing ``model``; ``fields`` fill the training facts (focal, dataset...)."""
    return CheckpointRecord(
        model=model.config.to_dict(),
        mean=list(model.mean),
        std=list(model.std),
        encoder_input_size=list(model.input_size),
        **fields,
    )
