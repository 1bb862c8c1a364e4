"""The predictor: RGB uint8 arrays in, metric depth (metres) out. Used by the node and the CLIs.

Conversion to float, resizing and normalisation run on the model's device (GPU when there is
one), not in NumPy: only the uint8 pixels cross the host-device boundary (through a reused
pinned buffer on CUDA). The model itself runs on one of three backends (torch, onnxruntime,
tensorrt), plain or with the fast-path re-writes of :mod:`.options` (``optimize=True``).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ...devices import resolve_device
from ...model import BackboneConfig, CheckpointRecord, ModelConfig, SpaceClip, load_model
from ...model.confidence import confidence_heads
from ...model.preprocess import resize_and_normalize
from .options import BACKENDS, InferenceOptions, default_options, unoptimized_options
from .prediction import NO_AUXILIARY_HEADS, Prediction
from .torch_engine import TorchEngine
from .upload import FrameUploader

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device, options: InferenceOptions | None = None) -> torch.dtype:
    """The dtype of the model's inputs and outputs. On a CPU always fp32: there ``bf16`` is the torch
    fast path's bf16 decoder and attention, or ONNX Runtime's bf16 last stage (``options``), inside an
    fp32 model."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if device.type != "cuda" and precision != "fp32":
        cpu_bf16 = options is not None and (
            (options.backend == "torch" and options.torch.bf16_decoder)
            or (options.backend == "onnxruntime" and options.onnxruntime.bf16_last_stage))
        if not (precision == "bf16" and cpu_bf16):
            logger.warning("precision %s is a CUDA option (bf16 on a CPU: the torch fast path's bf16 decoder, "
                           "ONNX Runtime's bf16 last stage); running fp32 on %s", precision, device)
        return torch.float32
    return PRECISIONS[precision]


def _build_engine(model: SpaceClip, device: torch.device, dtype: torch.dtype, options: InferenceOptions):
    if options.backend == "torch":
        return TorchEngine(model, device, dtype, options.torch)
    if options.backend == "onnxruntime":
        from .onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(model.eval(), device, options.onnxruntime)
    from .tensorrt_engine import TensorRTEngine

    return TensorRTEngine(model.eval(), device, options.tensorrt)


class DepthPredictor:
    """Runs a :class:`SpaceClip` model on RGB images of any size.

    Args:
        model: the model (its weights are moved to ``device`` for the torch backend; re-writes
            for ``optimize=True`` are made on a copy).
        device: ``auto``, ``cuda``, ``cuda:N`` or ``cpu``.
        precision: ``fp32``, or ``fp16`` / ``bf16`` on CUDA (autocast; with ``optimize=True`` the
            weights themselves are cast). Torch backend only: TensorRT's precision is
            ``TensorRTOptions.fp16``, ONNX Runtime runs the graph as exported (fp32 / int8).
        record: the checkpoint record the decoder came from (for focal rescaling and reporting).
        backend: ``torch`` (default), ``onnxruntime`` or ``tensorrt``.
        optimize: use the backend's recommended fast path on this device (see
            :func:`default_options`); ``False`` runs the model as trained, as before.
        options: explicit settings; overrides ``backend`` and ``optimize`` when given.
    """

    def __init__(
        self,
        model: SpaceClip,
        device: str = "auto",
        precision: str = "fp32",
        record: CheckpointRecord | None = None,
        *,
        backend: str = "torch",
        optimize: bool = False,
        options: InferenceOptions | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if options is not None and backend != "torch" and backend != options.backend:
            raise ValueError(f"backend {backend!r} contradicts options.backend {options.backend!r}")
        self.device = resolve_device(device)
        if options is None:
            options = default_options(backend, self.device, precision) if optimize else unoptimized_options(backend)
        self.dtype = resolve_precision(precision, self.device, options)
        self.precision = {v: k for k, v in PRECISIONS.items()}[self.dtype]
        self.record = record
        self.options = options
        self.backend = options.backend
        # What backend "auto" chose and measured (inference.runtime.auto_select.AutoChoice); None otherwise.
        self.auto_choice = None
        self.engine = _build_engine(model, self.device, self.dtype, options)
        # The torch backend runs (a re-written copy of) the model on the device; the others run an
        # exported graph and keep the original model where it is until release_model().
        self.model: SpaceClip | None = self.engine.model if isinstance(self.engine, TorchEngine) else model.eval()
        self.config: ModelConfig = model.config
        self.input_size = tuple(model.input_size)
        self.mean = tuple(model.mean)
        self.std = tuple(model.std)
        self._uploader = FrameUploader(self.device)
        # (index, loss weight) of the auxiliary heads the confidence map compares the depth with
        # (trained ones only; model.confidence).
        self.confidence_heads = confidence_heads(record, getattr(self.engine, "auxiliary_heads", 0))

    def confidence_problem(self) -> str | None:
        """Why this predictor cannot give a confidence map (``infer(with_confidence=True)``), or None."""
        if getattr(self.engine, "auxiliary_heads", 0) == 0 and self.engine.name != "torch":
            return NO_AUXILIARY_HEADS
        if not self.confidence_heads:
            return (
                "the confidence map needs a trained auxiliary head, and this decoder has none "
                "(aux_heads off, or every auxiliary loss weight 0 in training)"
            )
        return None

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike | None,
        backbone: BackboneConfig | None = None,
        device: str = "auto",
        precision: str = "fp32",
        *,
        backend: str = "torch",
        optimize: bool = False,
        options: InferenceOptions | None = None,
    ) -> DepthPredictor:
        model, record = load_model(checkpoint, backbone=backbone)
        predictor = cls(
            model, device=device, precision=precision, record=record,
            backend=backend, optimize=optimize, options=options,
        )
        del model
        predictor.release_model()  # nobody else holds it: an exported graph needs no torch weights
        return predictor

    def release_model(self) -> None:
        """Let go of the torch model when an exported graph runs it (ONNX Runtime, TensorRT).

        The graph holds its own copy of the weights, so the torch ones (about 390 MB for ViT-B/16
        in fp32) are only dead weight on a robot; they are freed once no caller holds the model.
        Afterwards ``model`` is None and the engine cannot time encoder and decoder apart. Does
        nothing for the torch backend, whose engine runs the model.
        """
        if isinstance(self.engine, TorchEngine):
            return
        self.model = None
        release = getattr(self.engine, "release_model", None)
        if release is not None:
            release()

    def describe(self) -> str:
        cfg = self.config.backbone
        weights = cfg.pretrained or "random weights"
        decoder = "trained decoder" if self.record is not None else "UNTRAINED decoder"
        return (
            f"SPACE-CLIP {cfg.name} ({weights}), {decoder}, encoder input "
            f"{self.input_size[0]}x{self.input_size[1]}, on {self.device} ({self.precision}), "
            f"backend {self.engine.describe()}"
        )

    def _to_device(self, images: np.ndarray) -> torch.Tensor:
        return self._uploader.upload(images).permute(0, 3, 1, 2).float().div_(255.0)

    def prepare_inputs(self, images: np.ndarray) -> torch.Tensor:
        """What the engine takes: normalised encoder pixels, or the raw frames for graphs that preprocess."""
        if getattr(self.engine, "takes_images", False):
            expected = self.engine.image_size
            if tuple(images.shape[1:3]) != expected:
                raise ValueError(
                    f"the exported graph takes {expected[0]}x{expected[1]} frames (its --image-size), "
                    f"got {images.shape[1]}x{images.shape[2]}; export one for this camera or use a 'pixels' graph"
                )
            return self._uploader.upload(images)
        return resize_and_normalize(self._to_device(images), self.input_size, self.mean, self.std)

    @torch.inference_mode()
    def infer(
        self,
        images: np.ndarray,
        output_size: tuple[int, int] | None = None,
        with_embedding: bool = False,
        with_confidence: bool = False,
    ) -> Prediction:
        """Batch (B, H, W, 3) uint8 RGB -> depth (B, H_out, W_out) on the device (and the embedding,
        and the confidence map of :mod:`space_clip_ros.model.confidence`, when asked for; asking
        for a confidence this predictor cannot give raises ValueError with
        :meth:`confidence_problem`'s reason)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {images.shape}")
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise ValueError(f"empty image of shape {images.shape[1:3]}")
        size = tuple(output_size) if output_size is not None else tuple(images.shape[1:3])
        if not with_confidence:
            return self.engine.run(self.prepare_inputs(images), size, with_embedding)
        problem = self.confidence_problem()
        if problem is not None:
            raise ValueError(problem)
        return self.engine.run(self.prepare_inputs(images), size, with_embedding, self.confidence_heads)

    def predict(self, images: np.ndarray, output_size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3) or (B, H, W, 3) -> float32 depth (H, W) or (B, H, W) in metres."""
        images = np.asarray(images)
        single = images.ndim == 3
        batch = images[None] if single else images
        depth = self.infer(batch, output_size).depth.cpu().numpy()
        return depth[0] if single else depth


def create_predictor(
    checkpoint: str | os.PathLike | None,
    backbone: BackboneConfig | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    optimize: bool = True,
    **settings,
) -> DepthPredictor:
    """A predictor on the fastest path of this device, for Python callers (scripts, notebooks, the
    memory measurement of docs/benchmarks.md) that want the recommended settings without choosing them.

    The same rule as the depth node's and the tools' (``auto_select.predictor_from_checkpoint``):
    ``backend="auto"`` measures this device's candidate paths once and caches the choice,
    ``precision="auto"`` lets it pick the precision too, ``optimize=False`` gives the exact model;
    ``settings`` are that function's other arguments (``output_size``, ``cache_path``, ...).
    """
    from .auto_select import predictor_from_checkpoint

    return predictor_from_checkpoint(checkpoint, backbone, device=device, precision=precision, backend=backend,
                                     optimize=optimize, **settings)
