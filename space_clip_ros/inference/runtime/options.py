"""Settings of the inference fast paths, one dataclass per backend.

Every option here is a pure speed/memory choice: none changes what the model computes beyond
the rounding stated in docs/benchmarks.md (exact re-writes, reduced precision, or int8 weights).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

BACKENDS = ("torch", "onnxruntime", "tensorrt")
#: What a user may ask for: a backend, or ``auto`` (measure this device's candidate paths, keep the
#: fastest within the depth tolerance: :mod:`.auto_select`).
BACKEND_CHOICES = ("auto", *BACKENDS)
#: The predictor's precision, or ``auto`` (fp16 on CUDA, fp32 on a CPU; with backend ``auto`` every
#: precision this device runs fast is a candidate).
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share one core's arithmetic units, so they do not help GEMMs)."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


@dataclass(frozen=True)
class TorchOptions:
    """Optimisations of the PyTorch backend.

    Attributes:
        sdpa_attention: replace open_clip's ``nn.MultiheadAttention`` by a module calling
            ``F.scaled_dot_product_attention`` (fused kernels; needed for int8 and export).
        fold_batch_norm: fold the decoder's batch norms into the preceding convolutions.
        channels_last: NHWC memory layout for the decoder's convolutions.
        quantize_encoder_int8: dynamic int8 quantisation of the encoder's Linear layers (CPU only;
            weights int8, activations quantised per call).
        int8_per_channel: with ``quantize_encoder_int8``, one weight scale per output channel
            (same speed as one per tensor, a smaller error).
        bf16_decoder: CPU: the decoder's weights and arithmetic in bf16 (features rounded to bf16 on
            the way in, depth back in fp32 before the final resize); needs bf16 arithmetic in
            hardware (``cpu_features.bf16_supported``). On CUDA ``half_weights`` covers the decoder.
        bf16_attention: CPU: the encoder's attention products (SDPA) in bf16; needs
            ``sdpa_attention`` and bf16 arithmetic in hardware.
        half_weights: with precision fp16/bf16 on CUDA, cast the weights themselves to that type
            (the frozen encoder never trains, so no fp32 master copy is needed); otherwise autocast.
        compile_mode: ``torch.compile`` mode for the whole model, or ``none``.
        cuda_graphs: capture encoder + decoder in a CUDA graph per input shape (CUDA only).
        num_threads: intra-op CPU threads; ``None`` leaves torch's setting alone, ``0`` means
            the number of physical cores.
    """

    sdpa_attention: bool = True
    fold_batch_norm: bool = True
    channels_last: bool = True
    quantize_encoder_int8: bool = False
    int8_per_channel: bool = True
    bf16_decoder: bool = False
    bf16_attention: bool = False
    half_weights: bool = True
    compile_mode: str = "none"
    cuda_graphs: bool = False
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.num_threads is not None and self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = physical cores), got {self.num_threads}")


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """Settings of the ONNX Runtime backend.

    Attributes:
        model_path: an ONNX file made by ``space-clip-export``; ``None`` exports the predictor's
            model on the fly (a few seconds) into memory.
        quantize_int8: dynamically quantise the weight MatMuls (the encoder's Linear layers) to
            int8 after export (ignored when ``model_path`` is given: quantise the file instead).
        int8_signed_weights: with ``quantize_int8``, s8 weights (u8 x s8 products) instead of u8;
            ``None``: s8 where the CPU sums int8 products exactly and fastest (VNNI, AMX), u8
            elsewhere (``rewrites.quantize``).
        quantize_decoder_int8: static int8 for the decoder's convolutions too, except the
            full-resolution stage, the depth heads and the token projections, with activation ranges
            calibrated on ``calibration_images`` (``rewrites.decoder_int8``); for CPUs with VNNI /
            AMX int8 dot products.
        calibration_images: image files from the camera that calibrate ``quantize_decoder_int8``
            (``rewrites.decoder_int8.calibration_files`` lists a folder or a glob).
        bf16_last_stage: the decoder's last (full-resolution) stage and depth head run in torch in
            bf16 (oneDNN, ``rewrites.precision.last_stage_in``) after a graph that stops before them:
            ONNX Runtime has no bf16 kernels on x86, and that stage is kept out of int8 for its
            error, so it is the one float part left (~15 % of the int8 path's time on Zen 5). For
            CPUs with bf16 arithmetic (``cpu_features.bf16_supported``); needs the model (not
            ``model_path``). Torch then runs on as many threads as ONNX Runtime (``torch_threads``).
            ``auto`` measures it: on the 2-core Zen 5 it was no faster (74 vs 73.5 ms: the stage
            costs torch 12-14 ms, and its OpenMP threads spin into the next frame's graph).
        intra_op_threads: threads per operator; ``0`` means the number of physical cores.
        allow_spinning: let the worker threads spin while a run is in progress, waiting for the next
            operator's work instead of sleeping between operators; they stop spinning when the run
            ends (``session.force_spinning_stop``), so no core is taken between frames. Faster on
            idle cores, slower on busy ones (Zen 5, 2 cores, int8 encoder and decoder: 76.6 vs
            86.1 ms idle; 193 vs 154 ms median beside two busy processes), so off by default and
            measured both ways by ``auto`` on the ONNX Runtime int8 paths.
        providers: execution providers in order of preference; ``None`` picks CUDA for a CUDA
            device when onnxruntime-gpu is installed, else the CPU provider.
        torch_threads: intra-op threads of torch for its work around the graph (frame to float,
            resize, normalise, final depth resize); ``None`` leaves torch's setting alone. The
            recommended CPU path uses 1: those ops are small, and torch's OpenMP threads would
            wait on the cores ONNX Runtime's pool works on (measured with other load on the
            cores: 55 ms instead of 3.5 ms for the resize of a 640x480 frame). Process-wide.
        graph_cache: a folder that keeps the exported and quantised graphs between starts, by
            what made them (``runtime.graph_cache``; the node and the tools use the folder beside
            backend auto's cache file); ``None``: export and quantise anew each time.
    """

    model_path: str | None = None
    quantize_int8: bool = False
    int8_signed_weights: bool | None = None
    quantize_decoder_int8: bool = False
    calibration_images: tuple[str, ...] = ()
    bf16_last_stage: bool = False
    intra_op_threads: int = 0
    allow_spinning: bool = False
    providers: tuple[str, ...] | None = None
    torch_threads: int | None = None
    graph_cache: str | None = None


@dataclass(frozen=True)
class TensorRTOptions:
    """Settings of the TensorRT backend (needs the ``tensorrt`` Python package and CUDA).

    Attributes:
        engine_path: a serialised engine (``trtexec --saveEngine``); built from ``onnx_path`` or
            from an on-the-fly export when ``None``.
        onnx_path: ONNX file to build from when no engine is given.
        fp16: allow fp16 kernels when building.
        workspace_bytes: builder workspace limit.
        max_batch: largest batch of the optimisation profile when the graph has a dynamic batch.
    """

    engine_path: str | None = None
    onnx_path: str | None = None
    fp16: bool = True
    workspace_bytes: int = 1 << 30
    max_batch: int = 16


@dataclass(frozen=True)
class InferenceOptions:
    """Which backend runs the model and how; ``DepthPredictor(..., options=...)`` takes one."""

    backend: str = "torch"
    torch: TorchOptions = field(default_factory=TorchOptions)
    onnxruntime: OnnxRuntimeOptions = field(default_factory=OnnxRuntimeOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")


def recommended_backend(device: torch.device) -> str:
    """The backend to use when nothing is measured (backend ``auto`` with ``optimize=False``, or a
    caller that resolves ``auto`` without :mod:`.auto_select`): what measured fastest on a CPU
    without bf16 arithmetic (docs/benchmarks.md, Zen 3: ONNX Runtime with int8 encoder MatMuls) and
    on CUDA (torch with half-precision weights). ``auto`` measures instead where it can.
    """
    return "onnxruntime" if device.type == "cpu" else "torch"


def cpu_bf16_wanted(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` asks for the CPU's bf16 decoder and attention, and this CPU has bf16
    arithmetic; asking on a CPU without it logs why fp32 runs instead."""
    if device.type != "cpu" or precision != "bf16":
        return False
    from .cpu_features import bf16_supported

    if bf16_supported():
        return True
    logging.getLogger(__name__).warning(
        "precision bf16 on this CPU: no bf16 arithmetic in hardware (AVX-512-BF16 / AMX-BF16) or in this "
        "torch's oneDNN; running fp32 (bf16 would be emulated, slower)"
    )
    return False


def default_options(backend: str, device: torch.device, precision: str = "fp32") -> InferenceOptions:
    """The recommended fast path of ``backend`` on ``device`` (what ``optimize=True`` selects).

    CPU: int8 weights for the encoder's matrix products (one scale per output channel), batch norm
    folded, NHWC decoder, one thread per physical core (ONNX Runtime: its pool gets the cores,
    torch's pre/post-processing one thread; s8 weights where VNNI sums them exactly). With
    ``precision`` bf16 on a CPU with bf16 arithmetic: the torch backend's decoder and attention
    products in bf16 too; ONNX Runtime's decoder's last stage and head in bf16 in torch
    (``bf16_last_stage``, torch then on all the cores). CUDA: half-precision weights, SDPA, NHWC,
    folded batch norm (the precision itself is the predictor's ``precision`` argument).
    """
    on_cpu = device.type == "cpu"
    bf16 = backend in ("torch", "onnxruntime") and cpu_bf16_wanted(precision, device)
    return InferenceOptions(
        backend=backend,
        torch=TorchOptions(quantize_encoder_int8=on_cpu, bf16_decoder=bf16, bf16_attention=bf16,
                           num_threads=0 if on_cpu else None),
        onnxruntime=OnnxRuntimeOptions(quantize_int8=on_cpu, bf16_last_stage=bf16,
                                       torch_threads=(physical_cores() if bf16 else 1) if on_cpu else None),
    )


def unoptimized_options(backend: str) -> InferenceOptions:
    """Plain eager execution (``optimize=False``): the model exactly as trained, nothing re-written."""
    return InferenceOptions(
        backend=backend,
        torch=TorchOptions(sdpa_attention=False, fold_batch_norm=False, channels_last=False, half_weights=False),
    )


def resolve_auto(device: torch.device, precision: str, backend: str) -> tuple[str, str]:
    """(precision, backend) with ``auto`` made concrete for ``device`` without measuring: fp16 on
    CUDA and fp32 on the CPU; :func:`recommended_backend`. Values other than ``auto`` pass through.
    (Backend ``auto`` with the fast path on measures instead: :mod:`.auto_select`.)"""
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if backend == "auto":
        backend = recommended_backend(device)
    return precision, backend


def inference_options(
    backend: str,
    device: str | torch.device,
    optimize: bool,
    *,
    precision: str = "fp32",
    exported_model: str = "",
    compile_mode: str = "none",
    cuda_graphs: bool = False,
    threads: int | None = None,
) -> InferenceOptions:
    """The options of a user's choice (the node's parameters, the benchmark's flags), in one rule.

    ``optimize``: :func:`default_options` for ``device`` and ``precision`` (a device name is
    resolved only then), with ``compile_mode``, ``cuda_graphs`` and ``threads`` (every backend's
    CPU threads) on top;
    otherwise :func:`unoptimized_options`, the model as trained, which those three do not touch.
    ``exported_model``: an existing file of ``space-clip-export`` for the onnxruntime backend
    (.onnx) or the tensorrt backend (.onnx or a serialised engine); FileNotFoundError when it
    is missing, ValueError for the torch backend.
    """
    if optimize:
        from ...devices import resolve_device

        device = resolve_device(device) if isinstance(device, str) else device
        options = default_options(backend, device, precision)
        torch_changes: dict[str, object] = {"compile_mode": compile_mode, "cuda_graphs": cuda_graphs}
        onnxruntime = options.onnxruntime
        if threads is not None:
            torch_changes["num_threads"] = threads
            onnxruntime = dataclasses.replace(onnxruntime, intra_op_threads=threads)
            if onnxruntime.bf16_last_stage:  # torch runs a part of the model too: on the same cores
                onnxruntime = dataclasses.replace(onnxruntime, torch_threads=threads or physical_cores())
        options = dataclasses.replace(
            options, torch=dataclasses.replace(options.torch, **torch_changes), onnxruntime=onnxruntime
        )
    else:
        options = unoptimized_options(backend)
    if not exported_model:
        return options
    if not Path(exported_model).is_file():
        raise FileNotFoundError(f"exported_model {exported_model} does not exist (make one with space-clip-export)")
    if backend == "onnxruntime":
        return dataclasses.replace(
            options, onnxruntime=dataclasses.replace(options.onnxruntime, model_path=exported_model)
        )
    if backend == "tensorrt":
        key = "onnx_path" if exported_model.endswith(".onnx") else "engine_path"
        return dataclasses.replace(options, tensorrt=dataclasses.replace(options.tensorrt, **{key: exported_model}))
    raise ValueError("exported_model needs backend onnxruntime or tensorrt (the torch backend runs the checkpoint)")
