"""The depth node's predictor, built from its parameters (no rclpy here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from space_clip_ros.inference.runtime.options import InferenceOptions, default_options, unoptimized_options
from space_clip_ros.inference.runtime.predictor import DepthPredictor, resolve_device
from space_clip_ros.model import BackboneConfig, CheckpointError
from space_clip_ros.ros.diagnostics import KEY_BACKBONE_WEIGHTS, KEY_DECODER_WEIGHTS, KEY_DEVICE, KEY_MODEL
from space_clip_ros.ros.parameters import DepthNodeSettings

#: What a bad model configuration raises at start-up; the node reports it and exits non-zero.
MODEL_SETUP_ERRORS = (CheckpointError, ValueError, FileNotFoundError, RuntimeError)


def backbone_config(settings: DepthNodeSettings) -> BackboneConfig | None:
    """The backbone the parameters ask for, or None to take the checkpoint's.

    Same rule as the command-line tools: once any of backbone / pretrained / vision_overrides is
    set, those three describe the backbone (empty name: ViT-B-16; empty weights: random), and
    load_model checks it against the checkpoint.
    """
    if not (settings.backbone or settings.pretrained or settings.vision_overrides):
        return None
    return BackboneConfig(
        name=settings.backbone or BackboneConfig.name,
        pretrained=settings.pretrained or None,
        vision_overrides=settings.vision_overrides_dict,
    )


def inference_options(settings: DepthNodeSettings) -> InferenceOptions:
    """Backend, fast path and exported-model file from the parameters."""
    if settings.optimize:
        options = default_options(settings.backend, resolve_device(settings.device))
    else:
        options = unoptimized_options(settings.backend)
    exported = settings.exported_model
    if not exported:
        return options
    if not Path(exported).is_file():
        raise FileNotFoundError(f"exported_model {exported} does not exist (make one with space-clip-export)")
    if settings.backend == "onnxruntime":
        return dataclasses.replace(options, onnxruntime=dataclasses.replace(options.onnxruntime, model_path=exported))
    if settings.backend == "tensorrt":
        key = "onnx_path" if exported.endswith(".onnx") else "engine_path"
        return dataclasses.replace(options, tensorrt=dataclasses.replace(options.tensorrt, **{key: exported}))
    raise ValueError("exported_model needs backend onnxruntime or tensorrt (the torch backend runs the checkpoint)")


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
