"""SPACE-CLIP model: frozen CLIP vision tower + dual-pathway decoder (no ROS imports here)."""

from .backbone import BackboneFeatures, FrozenClipBackbone, build_backbone, save_vision_weights
from .checkpoint import (
    CheckpointError,
    CheckpointRecord,
    check_compatible,
    checkpoint_paths,
    hash_weights,
    load_checkpoint,
    save_checkpoint,
)
from .config import BackboneConfig, DecoderConfig, ModelConfig, backbone_from_options
from .decoder import DualPathwayDecoder, LastStageInputs, SpaceClipOutput
from .factory import create_model, load_model, make_record
from .space_clip import SpaceClip

__all__ = [
    "BackboneConfig",
    "BackboneFeatures",
    "CheckpointError",
    "CheckpointRecord",
    "DecoderConfig",
    "DualPathwayDecoder",
    "FrozenClipBackbone",
    "ModelConfig",
    "SpaceClip",
    "LastStageInputs",
    "SpaceClipOutput",
    "backbone_from_options",
    "build_backbone",
    "check_compatible",
    "checkpoint_paths",
    "create_model",
    "hash_weights",
    "load_checkpoint",
    "load_model",
    "make_record",
    "save_checkpoint",
    "save_vision_weights",
]
