"""The depth node's predictor, built from its parameters (no rclpy here).

The rules are the ones every tool shares: the backbone from ``model.backbone_from_options``, the
backend settings from ``inference.runtime.options.inference_options``; this module only says
which parameter feeds which argument.
"""

from __future__ import annotations

from space_clip_ros.inference.runtime.options import InferenceOptions
from space_clip_ros.inference.runtime.options import inference_options as options_for
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model import BackboneConfig, CheckpointError, backbone_from_options
from space_clip_ros.ros.diagnostics import KEY_BACKBONE_WEIGHTS, KEY_DECODER_WEIGHTS, KEY_DEVICE, KEY_MODEL
from space_clip_ros.ros.parameters import DepthNodeSettings

#: What a bad model configuration raises at start-up; the node reports it and exits non-zero.
MODEL_SETUP_ERRORS = (CheckpointError, ValueError, FileNotFoundError, RuntimeError)


def backbone_config(settings: DepthNodeSettings) -> BackboneConfig | None:
    """The backbone the parameters ask for, or None to take the checkpoint's (empty = unset)."""
    return backbone_from_options(settings.backbone, settings.pretrained, settings.vision_overrides)


def inference_options(settings: DepthNodeSettings) -> InferenceOptions:
    """Backend, fast path and exported-model file from the parameters."""
    return options_for(settings.backend, settings.device, settings.optimize, exported_model=settings.exported_model)


def build_predictor(settings: DepthNodeSettings) -> DepthPredictor:
    """Load backbone and decoder and place them on the device; raises one of MODEL_SETUP_ERRORS."""
    return DepthPredictor.from_checkpoint(
        settings.checkpoint or None,
        backbone=backbone_config(settings),
        device=settings.device,
        precision=settings.precision,
        options=inference_options(settings),
    )


def model_facts(predictor: DepthPredictor, checkpoint: str) -> dict[str, str]:
    """Static facts for the diagnostics: model, device, where backbone and decoder weights came from."""
    backbone = predictor.config.backbone
    if backbone.pretrained is None:
        backbone_weights = "random (no pretrained tag or weights file)"
    else:
        backbone_weights = f"pretrained: {backbone.pretrained}"
    if predictor.record is None:
        decoder_weights = "random (no checkpoint)"
    else:
        decoder_weights = f"trained: {checkpoint} (dataset: {predictor.record.dataset or 'unknown'})"
    overrides = f" {backbone.vision_overrides}" if backbone.vision_overrides else ""
    return {
        KEY_MODEL: f"SPACE-CLIP {backbone.name}{overrides}, encoder input "
        f"{predictor.input_size[0]}x{predictor.input_size[1]}",
        KEY_DEVICE: f"{predictor.device} ({predictor.precision})",
        KEY_BACKBONE_WEIGHTS: backbone_weights,
        KEY_DECODER_WEIGHTS: decoder_weights,
    }
