"""What every backend, and so the predictor, returns for a batch of frames."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Why an engine that runs an exported graph (ONNX Runtime, TensorRT) gives no confidence map.
NO_AUXILIARY_HEADS = (
    "the confidence map needs the decoder's auxiliary heads, which exported graphs (backends onnxruntime "
    "and tensorrt) do not carry; use backend torch for publish_confidence / points_min_confidence"
)


@dataclass
class Prediction:
    """The result of one engine run / predictor call; tensors stay on the model's device."""

    depth: torch.Tensor  # (B, H, W) float32 metres
    embedding: torch.Tensor | None = None  # (B, D) float32 CLIP image embedding, when asked for
    # (B, H, W) float32 in (0, 1]: agreement of the final and auxiliary heads (model.confidence),
    # when asked for; only engines that run the auxiliary heads give it (DepthPredictor.confidence_problem).
    confidence: torch.Tensor | None = None
