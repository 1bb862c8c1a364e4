"""Inference: the predictor shared by the node, the CLIs and the bag tool, and its fast paths."""

from .runtime.options import (
    BACKENDS,
    InferenceOptions,
    OnnxRuntimeOptions,
    TensorRTOptions,
    TorchOptions,
    default_options,
    recommended_backend,
    unoptimized_options,
)
from .runtime.prediction import Prediction
from .runtime.predictor import DepthPredictor, create_predictor

__all__ = [
    "BACKENDS",
    "DepthPredictor",
    "InferenceOptions",
    "OnnxRuntimeOptions",
    "Prediction",
    "TensorRTOptions",
    "TorchOptions",
    "create_predictor",
    "default_options",
    "recommended_backend",
    "unoptimized_options",
]
