"""The depth node's predictor, built from its parameters (no rclpy here).

The rules are the ones every tool shares: the backbone from ``model.backbone_from_options``, the
predictor from ``inference.runtime.auto_select.predictor_from_checkpoint`` (backend ``auto``
measures and caches the fastest valid path; a named backend takes ``inference_options``); this
module only says which parameter feeds which argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from space_clip_ros.devices import resolve_device
from space_clip_ros.inference.rewrites.decoder_int8 import has_calibration_frames, kept_frames_folder
from space_clip_ros.inference.runtime.auto_select import default_cache_path, predictor_from_checkpoint
from space_clip_ros.inference.runtime.options import InferenceOptions, resolve_auto
from space_clip_ros.inference.runtime.options import inference_options as options_for
from space_clip_ros.inference.runtime.predictor import DepthPredictor
from space_clip_ros.model import BackboneConfig, CheckpointError, backbone_from_options
from space_clip_ros.ros.diagnostics import KEY_BACKBONE_WEIGHTS, KEY_DECODER_WEIGHTS, KEY_DEVICE, KEY_MODEL
from space_clip_ros.ros.parameters import DepthNodeSettings

#: What a bad model configuration raises at start-up; the node reports it and exits non-zero.
MODEL_SETUP_ERRORS = (CheckpointError, ValueError, FileNotFoundError, RuntimeError)

#: Diagnostics keys of the inference path (what backend auto chose, or what the parameters forced).
KEY_INFERENCE_PATH = "inference path"
KEY_PATH_LATENCY = "inference path latency at start-up (ms)"


def backbone_config(settings: DepthNodeSettings) -> BackboneConfig | None:
    """The backbone the parameters ask for, or None to take the checkpoint's (empty = unset)."""
    return backbone_from_options(settings.backbone, settings.pretrained, settings.vision_overrides)


def inference_options(settings: DepthNodeSettings) -> InferenceOptions:
    """The options a named backend's parameters give (backend, fast path, precision, CUDA graphs,
    exported-model file). Backend auto: the torch options of those parameters (auto itself chooses
    among measured paths in :func:`build_predictor`); with an exported model it raises ValueError."""
    if settings.backend == "auto" and settings.exported_model:
        raise ValueError("exported_model needs backend onnxruntime or tensorrt, not auto")
    device = resolve_device(settings.device)
    precision, backend = resolve_auto(device, settings.precision, "torch" if settings.backend == "auto" else
                                      settings.backend)
    return options_for(backend, device, settings.optimize, precision=precision,
                       exported_model=settings.exported_model, cuda_graphs=settings.cuda_graphs)


def output_size(settings: DepthNodeSettings) -> tuple[int, int] | None:
    """The depth size backend auto measures at: the node's output size when set, else None (the default
    camera size of ``auto_select``; a camera's own size is not known before its first frame)."""
    outputs = settings.outputs
    return (outputs.output_height, outputs.output_width) if outputs.output_width > 0 else None


def needs_torch(settings: DepthNodeSettings) -> bool:
    """Whether an output needs the torch backend (the confidence map runs the decoder's auxiliary heads)."""
    outputs = settings.outputs
    return bool(getattr(outputs, "publish_confidence", False) or getattr(outputs, "points_min_confidence", 0.0) > 0)


#: ``calibration_images`` value: frames this node keeps from its own camera (rewrites.decoder_int8).
CALIBRATION_AUTO = "auto"


@dataclass(frozen=True)
class CalibrationPlan:
    """What ``calibration_images`` means at this start: the frames to give backend auto (None: none),
    and the folder to keep this camera's frames in while the node runs (None: nothing to keep)."""

    images: str | None
    record_into: Path | None = None


def calibration_plan(settings: DepthNodeSettings, node_name: str) -> CalibrationPlan:
    """``calibration_images`` resolved: a folder or glob as given; ``auto``: the frames an earlier run of
    this node kept (``camera_frames/<node>`` beside the auto cache), or, while there are none, none now
    and a folder to keep them in."""
    value = settings.calibration_images
    if value != CALIBRATION_AUTO:
        return CalibrationPlan(value or None)
    folder = kept_frames_folder(settings.auto_cache or default_cache_path(), node_name)
    if has_calibration_frames(folder):
        return CalibrationPlan(str(folder))
    return CalibrationPlan(None, folder)


def predictor_settings(settings: DepthNodeSettings, plan: CalibrationPlan | None = None) -> dict[str, Any]:
    """The arguments of ``predictor_from_checkpoint`` that the parameters give (``plan``: the resolved
    ``calibration_images``; by default the parameter as given, ``auto`` meaning none)."""
    if plan is None:
        plan = CalibrationPlan(None if settings.calibration_images == CALIBRATION_AUTO
                               else settings.calibration_images or None)
    arguments: dict[str, Any] = {
        "device": settings.device, "precision": settings.precision, "backend": settings.backend,
        "optimize": settings.optimize, "exported_model": settings.exported_model,
        "cuda_graphs": settings.cuda_graphs, "output_size": output_size(settings),
        "cache_path": settings.auto_cache, "torch_only": needs_torch(settings),
        "calibration_images": plan.images,
    }
    return arguments


def build_predictor(settings: DepthNodeSettings, plan: CalibrationPlan | None = None) -> DepthPredictor:
    """Load backbone and decoder and place them on the device on the path the parameters ask for
    (backend auto: measured once, then cached); raises one of MODEL_SETUP_ERRORS."""
    return predictor_from_checkpoint(settings.checkpoint or None, backbone=backbone_config(settings),
                                     **predictor_settings(settings, plan))


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
    choice = predictor.auto_choice
    if choice is None:
        path, latency = f"{predictor.engine.describe()} (forced by the parameters)", "not measured"
    else:
        path = f"{choice.name} (backend auto, {'measured at this start' if choice.measured_now else 'cached'})"
        latency = "none valid: exact model" if choice.latency_ms is None else f"{choice.latency_ms:.1f}"
    return {
        KEY_MODEL: f"SPACE-CLIP {backbone.name}{overrides}, encoder input "
        f"{predictor.input_size[0]}x{predictor.input_size[1]}",
        KEY_DEVICE: f"{predictor.device} ({predictor.precision})",
        KEY_BACKBONE_WEIGHTS: backbone_weights,
        KEY_DECODER_WEIGHTS: decoder_weights,
        KEY_INFERENCE_PATH: path,
        KEY_PATH_LATENCY: latency,
    }
