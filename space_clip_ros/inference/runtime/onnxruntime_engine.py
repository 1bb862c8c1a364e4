"""The ONNX Runtime backend: the exported graph run by ONNX Runtime (CPU, or CUDA with onnxruntime-gpu).

Graphs with a ``pixels`` input (normalised float at the encoder size) take the predictor's own
preprocessing, so their depth equals the torch path's up to float rounding; graphs with an
``image`` input (uint8 camera frames at one fixed size, preprocessing inside) take the frames
as they are. Depth comes out at the graph's size and is bilinearly resized to the requested size
in torch when they differ (that is also the decoder's own last step).

With ``bf16_last_stage`` the graph stops before the decoder's last stage (its inputs are the
graph's outputs) and torch runs that stage and the depth head in bf16 (``rewrites.precision``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...model import LastStageInputs, SpaceClip
from ..benchmarking.timing import torch_threads
from ..rewrites.decoder_int8 import graph_inputs, quantize_onnx_decoder_int8, read_calibration_frames
from ..rewrites.export import (
    DEPTH_OUTPUT,
    EMBEDDING_OUTPUT,
    IMAGE_INPUT,
    LAST_STAGE_OUTPUTS,
    PIXELS_INPUT,
    ExportOptions,
    export_onnx,
    export_parts,
    part_input_names,
)
from ..rewrites.precision import last_stage_in
from ..rewrites.quantize import quantize_onnx_int8
from ..rewrites.split import cut_before_last_stage
from .graph_cache import GraphStage, files_identity, graph_store, model_identity
from .memory import return_freed_memory_to_os
from .options import OnnxRuntimeOptions, physical_cores
from .prediction import NO_AUXILIARY_HEADS, Prediction

logger = logging.getLogger(__name__)


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a declared dependency
        raise RuntimeError(
            "the onnxruntime backend needs the onnxruntime package (pip install onnxruntime, or "
            "onnxruntime-gpu for CUDA)"
        ) from exc
    return onnxruntime


def _default_providers(ort, device: torch.device) -> list[str]:
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        # Frames and results still pass through host memory: on a GPU the torch and tensorrt
        # backends are the fast paths; this one is for checking an exported graph.
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    logger.warning("onnxruntime has no CUDA provider here (install onnxruntime-gpu); running on the CPU")
    return ["CPUExecutionProvider"]


def make_session(source: str | bytes, device: torch.device, options: OnnxRuntimeOptions):
    """An InferenceSession with full graph optimisation and the configured threading."""
    ort = _import_onnxruntime()
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.intra_op_num_threads = options.intra_op_threads or physical_cores()
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    # spinning, when allowed, ends with each run (a key older versions ignore: they spin a little longer)
    session_options.add_session_config_entry("session.force_spinning_stop", "1")
    providers = list(options.providers or _default_providers(ort, device))
    return ort.InferenceSession(source, session_options, providers=providers)


def int8_signed_weights(options: OnnxRuntimeOptions) -> bool:
    """s8 weights for the int8 MatMuls: as the options say, else where the CPU has VNNI / AMX."""
    if options.int8_signed_weights is not None:
        return options.int8_signed_weights
    from .cpu_features import has_int8_dot_product

    return has_int8_dot_product()


def _require_calibration_images(options: OnnxRuntimeOptions) -> None:
    if not options.calibration_images:
        raise ValueError(
            "quantize_decoder_int8 needs calibration_images: frames from the camera (synthetic frames give "
            "activation ranges that real frames exceed; rewrites.decoder_int8)"
        )


def _calibration_pixels(model: SpaceClip, options: OnnxRuntimeOptions) -> list[np.ndarray]:
    """The calibration frames of ``options`` as the exported graph's pixels input."""
    _require_calibration_images(options)
    return graph_inputs(model, read_calibration_frames(options.calibration_images), takes_images=False)


def _whole_model_bytes(model: SpaceClip, options: OnnxRuntimeOptions) -> bytes:
    """Export ``model`` (pixels in, native depth + embedding out, dynamic batch), quantised as
    ``options`` ask (with ``bf16_last_stage``, cut before the decoder's last stage: its inputs come
    out instead of depth, ``rewrites.split``), and return the ONNX bytes. Each stage's graph comes
    from, or goes to, the graph cache ``options.graph_cache`` (``graph_cache``)."""
    if options.quantize_decoder_int8:
        _require_calibration_images(options)
    export_options = ExportOptions(dynamic_batch=True, with_embedding=True)
    stages = [GraphStage("ONNX export", {"export": dataclasses.asdict(export_options)},
                         lambda _source, out: export_onnx(model, out, export_options))]
    if options.quantize_int8:
        signed = int8_signed_weights(options)
        stages.append(GraphStage("int8 encoder", {"int8_encoder_matmuls": {"signed_weights": signed}},
                                 lambda source, out: quantize_onnx_int8(source, out, signed_weights=signed)))
    if options.quantize_decoder_int8:
        def calibrate(source: Path, out: Path) -> None:
            feeds = [{PIXELS_INPUT: pixels} for pixels in _calibration_pixels(model, options)]
            quantize_onnx_decoder_int8(source, out, model.decoder.config, feeds)

        frames = files_identity(options.calibration_images)
        stages.append(GraphStage("int8 decoder", {"int8_decoder": {"calibration_images": frames}}, calibrate))
    if options.bf16_last_stage:  # torch runs the last stage: the graph stops before it
        stages.append(GraphStage("cut before the last stage", {"cut_before_last_stage": True},
                                 lambda source, out: cut_before_last_stage(source, out, model.decoder.config)))
    model_hash = model_identity(model) if options.graph_cache else "not kept"
    with graph_store(options.graph_cache) as store:
        return store.build_stages(model_hash, stages).read_bytes()


def _part_bytes(model: SpaceClip, options: OnnxRuntimeOptions) -> tuple[bytes, bytes]:
    """Encoder and decoder graphs, quantised as ``options`` ask."""
    with tempfile.TemporaryDirectory(prefix="space_clip_onnx_") as folder:
        encoder_path, decoder_path = Path(folder) / "encoder.onnx", Path(folder) / "decoder.onnx"
        export_parts(model, encoder_path, decoder_path)
        if options.quantize_decoder_int8:
            # The decoder graph is calibrated on the float encoder's features of the calibration frames.
            encoder = make_session(str(encoder_path), torch.device("cpu"), options)
            names = part_input_names(model)
            feeds = [dict(zip(names, encoder.run(names, {PIXELS_INPUT: pixels})))
                     for pixels in _calibration_pixels(model, options)]
            del encoder
            quantized = Path(folder) / "decoder_int8.onnx"
            quantize_onnx_decoder_int8(decoder_path, quantized, model.decoder.config, feeds)
            decoder_path = quantized
        if options.quantize_int8:
            quantized = Path(folder) / "encoder_int8.onnx"
            quantize_onnx_int8(encoder_path, quantized, node_prefix="/backbone/",
                               signed_weights=int8_signed_weights(options))
            encoder_path = quantized
        return encoder_path.read_bytes(), decoder_path.read_bytes()


def quantization_summary(options: OnnxRuntimeOptions) -> str:
    """What the on-the-fly export quantises, for log lines and ``describe``."""
    parts = []
    if options.quantize_int8:
        parts.append(f"int8 encoder MatMuls (u8 x {'s8' if int8_signed_weights(options) else 'u8'})")
    if options.quantize_decoder_int8:
        count = len(options.calibration_images)
        parts.append(f"int8 decoder convolutions (static, calibrated on {count} camera frames)")
    return ", ".join(parts)


class OnnxRuntimeEngine:
    """Runs an exported SPACE-CLIP graph in an ``onnxruntime.InferenceSession``."""

    name = "onnxruntime"
    auxiliary_heads = 0  # exported graphs carry the depth (and embedding) outputs only

    def __init__(self, model: SpaceClip | None, device: torch.device, options: OnnxRuntimeOptions) -> None:
        self.device = device
        self.options = options
        self._model = model if options.model_path is None else None
        self._split: tuple[Callable, Callable] | None = None
        self._last_stage = None
        if options.bf16_last_stage:
            if model is None or options.model_path is not None:
                raise ValueError("bf16_last_stage runs the decoder's last stage from the model's weights: it needs "
                                 "the model, not an exported model_path")
            self._last_stage = last_stage_in(model.decoder, torch.bfloat16)
        if options.model_path is not None:
            source: str | bytes = str(options.model_path)
            self.origin = f"file {options.model_path}"
        elif model is not None:
            source = _whole_model_bytes(model, options)
            summary = quantization_summary(options)
            made = f"exported, graphs kept in {options.graph_cache}" if options.graph_cache else "exported on the fly"
            self.origin = made + (f", {summary}" if summary else "")
        else:
            raise ValueError("the onnxruntime backend needs a model to export or an ONNX model_path")
        self.session = make_session(source, device, options)
        del source
        return_freed_memory_to_os()  # the export's model copy and graph bytes
        self.threads = options.intra_op_threads or physical_cores()
        if options.torch_threads is not None and device.type == "cpu":
            torch.set_num_threads(options.torch_threads)  # process-wide, see OnnxRuntimeOptions

        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name not in (PIXELS_INPUT, IMAGE_INPUT):
            raise ValueError(
                f"ONNX graph inputs {[i.name for i in inputs]} are not a SPACE-CLIP export "
                f"(expected one input named '{PIXELS_INPUT}' or '{IMAGE_INPUT}'; make it with space-clip-export)"
            )
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self._last_stage is not None:
            self.result_names = [name for name in LAST_STAGE_OUTPUTS if name in self.output_names]
        else:
            self.result_names = [DEPTH_OUTPUT] if DEPTH_OUTPUT in self.output_names else []
        if not self.result_names:
            raise ValueError(f"ONNX graph has no '{DEPTH_OUTPUT}' output (outputs: {self.output_names})")
        # A fixed batch dimension is an int; a dynamic one is a name (str) or None.
        self.fixed_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None

    @property
    def takes_images(self) -> bool:
        """True when the graph takes uint8 camera frames (preprocessing inside the graph)."""
        return self.input_name == IMAGE_INPUT

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the camera frames an ``image`` graph was exported for."""
        if not self.takes_images:
            return None
        return int(self.input_shape[1]), int(self.input_shape[2])

    def _run_numpy(self, inputs: np.ndarray, with_embedding: bool) -> list[np.ndarray]:
        names = list(self.result_names)
        if with_embedding:
            if EMBEDDING_OUTPUT not in self.output_names:
                raise ValueError("this ONNX graph was exported without the embedding output (--with-embedding)")
            names.append(EMBEDDING_OUTPUT)
        if self.fixed_batch is None or inputs.shape[0] == self.fixed_batch:
            return self.session.run(names, {self.input_name: inputs})
        if self.fixed_batch != 1:
            raise ValueError(f"the ONNX graph has a fixed batch of {self.fixed_batch}, got {inputs.shape[0]} images")
        parts = [self.session.run(names, {self.input_name: inputs[i : i + 1]}) for i in range(inputs.shape[0])]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]

    def run(self, inputs: torch.Tensor, output_size: tuple[int, int], with_embedding: bool,
            confidence_heads: tuple[tuple[int, float], ...] = ()) -> Prediction:
        """``inputs``: normalised pixels (B, 3, h, w) float, or uint8 frames (B, H, W, 3) for image graphs."""
        if confidence_heads:
            raise ValueError(NO_AUXILIARY_HEADS)
        array = inputs.detach().cpu().numpy()
        if not self.takes_images:
            array = array.astype(np.float32, copy=False)
        outputs = self._run_numpy(np.ascontiguousarray(array), with_embedding)
        count = len(self.result_names)
        if self._last_stage is not None:
            depth = self._finish([torch.from_numpy(array) for array in outputs[:count]], output_size)
        else:
            depth = torch.from_numpy(outputs[0]).to(self.device)
            if tuple(depth.shape[-2:]) != tuple(output_size):
                depth = F.interpolate(depth, size=tuple(output_size), mode="bilinear", align_corners=False)
        embedding = torch.from_numpy(outputs[count]).to(self.device) if with_embedding else None
        return Prediction(depth=depth[:, 0], embedding=embedding)

    def _finish(self, tensors: list[torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        """The decoder's last stage and head in bf16 on the graph's outputs (``bf16_last_stage``),
        on as many torch threads as the graph had."""
        inputs = LastStageInputs(*tensors, *([None] * (3 - len(tensors))))
        with torch.inference_mode(), torch_threads(self.options.torch_threads or self.threads):
            return self._last_stage.finish(inputs, output_size).to(self.device)

    def release_model(self) -> None:
        """Drop the reference to the exported model (the session has its own weights)."""
        self._model = None
        return_freed_memory_to_os()

    def split_runners(self) -> tuple[Callable, Callable] | None:
        """(encode, decode) callables on separate encoder and decoder sessions, to time the parts.

        ``encode(pixels) -> features``, ``decode(features, output_size) -> depth``. Only for
        engines built from a model (a given ONNX file cannot be split) and run by ONNX Runtime alone
        (not ``bf16_last_stage``); None otherwise. Built on first use (two more exports) and kept.
        """
        if self._model is None or self._last_stage is not None:
            return None
        if self._split is None:
            self._split = self._make_split_runners()
        return self._split

    def _make_split_runners(self) -> tuple[Callable, Callable]:
        encoder_bytes, decoder_bytes = _part_bytes(self._model, self.options)
        encoder = make_session(encoder_bytes, self.device, self.options)
        decoder = make_session(decoder_bytes, self.device, self.options)
        del encoder_bytes, decoder_bytes
        return_freed_memory_to_os()
        names = part_input_names(self._model)

        def encode(pixels: torch.Tensor) -> list[np.ndarray]:
            return encoder.run(names, {PIXELS_INPUT: pixels.detach().cpu().numpy()})

        def decode(features: list[np.ndarray], output_size: tuple[int, int]) -> torch.Tensor:
            depth = torch.from_numpy(decoder.run([DEPTH_OUTPUT], dict(zip(names, features)))[0])
            return F.interpolate(depth, size=tuple(output_size), mode="bilinear", align_corners=False)

        return encode, decode

    def describe(self) -> str:
        threads = "" if self.options.torch_threads is None else f", torch {self.options.torch_threads}"
        last_stage = ", decoder's last stage and head in bf16 in torch" if self._last_stage is not None else ""
        return (f"onnxruntime {self.session.get_providers()[0]} ({self.origin}{last_stage}, {self.threads} "
                f"threads{threads})")
