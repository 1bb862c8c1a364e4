"""The PyTorch backend: the model in eager mode, optionally re-written for speed.

Re-writes (each chosen by :class:`TorchOptions`): SDPA attention, batch norm folded into the
convolutions, channels-last decoder, int8 encoder Linear layers (CPU), bf16 decoder and attention
(CPUs with bf16 arithmetic), half-precision weights (CUDA), ``torch.compile``, and CUDA graph
capture per input shape.
"""

from __future__ import annotations

import contextlib
import copy
import logging

import torch

from ...model import SpaceClip
from ...model.confidence import aux_agreement_confidence
from ..rewrites.attention import replace_multihead_attention
from ..rewrites.fusion import fold_batch_norms
from ..rewrites.precision import ReducedPrecisionDecoder, use_attention_dtype
from ..rewrites.quantize import quantize_linear_int8
from .options import TorchOptions, physical_cores
from .prediction import Prediction

logger = logging.getLogger(__name__)


def _needs_copy(options: TorchOptions, half: bool) -> bool:
    return (
        options.sdpa_attention
        or options.fold_batch_norm
        or options.channels_last
        or options.quantize_encoder_int8
        or options.bf16_decoder
        or options.bf16_attention
        or half
    )


def prepare_torch_model(
    model: SpaceClip, device: torch.device, dtype: torch.dtype, options: TorchOptions
) -> tuple[SpaceClip, list[str]]:
    """The model to run on ``device`` and the list of re-writes applied to it.

    Re-writes are applied to a copy made on the CPU (the caller's model is left as it is, and the
    device never holds two copies); with no re-write the model itself is moved to the device, as
    the predictor always did.
    """
    half = options.half_weights and device.type == "cuda" and dtype != torch.float32
    applied: list[str] = []
    if options.num_threads is not None and device.type == "cpu":
        threads = options.num_threads or physical_cores()
        torch.set_num_threads(threads)  # process-wide: intra-op threads of every torch op
        applied.append(f"threads={threads}")
    if not _needs_copy(options, half):
        return model.eval().to(device), applied

    source_device = next(model.parameters()).device
    prepared = copy.deepcopy(model.cpu()).eval()
    model.to(source_device)  # the caller's model stays where it was
    prepared.requires_grad_(False)
    if options.sdpa_attention and replace_multihead_attention(prepared.backbone):
        applied.append("sdpa-attention")
    if options.fold_batch_norm and fold_batch_norms(prepared.decoder):
        applied.append("folded-batch-norm")
    if options.quantize_encoder_int8:
        if device.type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on the CPU only; use fp16/bf16 on CUDA")
        prepared.backbone = quantize_linear_int8(prepared.backbone, per_channel=options.int8_per_channel)
        applied.append("int8-encoder-linear" + ("-per-channel" if options.int8_per_channel else ""))
    if (options.bf16_decoder or options.bf16_attention) and device.type != "cpu":
        raise ValueError("bf16_decoder / bf16_attention are CPU options; on CUDA use precision bf16")
    if options.bf16_attention and use_attention_dtype(prepared.backbone, torch.bfloat16):
        applied.append("bf16-attention")
    if options.bf16_decoder:
        prepared.decoder = ReducedPrecisionDecoder(prepared.decoder, torch.bfloat16)
        applied.append("bf16-decoder")
    if half:
        prepared = prepared.to(dtype)
        applied.append(f"{dtype}-weights".replace("torch.", ""))
    prepared = prepared.to(device)
    if options.channels_last:
        prepared.decoder.to(memory_format=torch.channels_last)
        applied.append("channels-last-decoder")
    return prepared, applied


# torch.compile modes that wrap the compiled graph in CUDA graphs of their own (cudagraph trees):
# their outputs live in a pool that the next call overwrites, and they cannot run inside a capture.
_CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")


def compile_mode_for(options: TorchOptions) -> str | None:
    """The ``mode`` argument of ``torch.compile`` for ``options`` (None: torch's default mode).

    With ``cuda_graphs`` the engine captures the compiled model in its own CUDA graph, so a mode
    whose compiled code captures graphs itself would nest one capture in another: ``max-autotune``
    is turned into ``max-autotune-no-cudagraphs``, and ``reduce-overhead`` (which is nothing but
    torch.compile's CUDA graphs) is refused.
    """
    mode = options.compile_mode
    if options.cuda_graphs and mode == "reduce-overhead":
        raise ValueError(
            "compile_mode 'reduce-overhead' is torch.compile's own CUDA graphs; it cannot be combined "
            "with cuda_graphs (use one or the other, or compile_mode 'default' with cuda_graphs)"
        )
    if options.cuda_graphs and mode == "max-autotune":
        return "max-autotune-no-cudagraphs"
    return None if mode in ("none", "default") else mode


class _GraphedForward:
    """One CUDA graph per (input shape, output size, embedding flag, confidence heads): static buffers
    and replay.

    Returns the graph's static output tensors, which the next replay of that graph overwrites: the
    caller must copy them before handing them out (``TorchEngine.run`` does).
    """

    def __init__(self, forward) -> None:
        self._forward = forward
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def __call__(self, pixels: torch.Tensor, output_size: tuple[int, int], with_embedding: bool,
                 confidence_heads: tuple[tuple[int, float], ...] = ()):
        # Streams, capture and replay act on the *current* device, which need not be the model's
        # (cuda:N, or a worker thread, whose current device is always cuda:0).
        with torch.cuda.device(pixels.device):
            key = (tuple(pixels.shape), pixels.dtype, tuple(output_size), with_embedding, confidence_heads)
            if key not in self._graphs:
                self._graphs[key] = self._capture(pixels, output_size, with_embedding, confidence_heads)
                logger.info("captured a CUDA graph for input %s, output %s", tuple(pixels.shape), output_size)
            graph, static_input, static_outputs = self._graphs[key]
            static_input.copy_(pixels)
            graph.replay()
            return static_outputs

    def _capture(self, pixels: torch.Tensor, output_size: tuple[int, int], with_embedding: bool,
                 confidence_heads: tuple[tuple[int, float], ...]):
        static_input = pixels.clone()
        # Warm-up on a side stream, as capture requires (lazy initialisation, cuBLAS handles).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(static_input, output_size, with_embedding, confidence_heads)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = self._forward(static_input, output_size, with_embedding, confidence_heads)
        return graph, static_input, static_outputs


class TorchEngine:
    """Runs a (possibly re-written) :class:`SpaceClip` on normalised encoder inputs."""

    name = "torch"

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype, options: TorchOptions) -> None:
        if options.cuda_graphs and device.type != "cuda":
            raise ValueError("cuda_graphs needs a CUDA device")
        compile_mode = compile_mode_for(options)  # checked before the (slow) model preparation
        self.device = device
        self.dtype = dtype
        self.options = options
        self.model, self.applied = prepare_torch_model(model, device, dtype, options)
        # Whole-model half weights (CUDA): the input is cast to them (a bf16 CPU decoder casts its own).
        self.half_weights = options.half_weights and device.type == "cuda" and dtype != torch.float32
        self._forward = self._plain_forward
        # Whether the forward returns buffers that its next call overwrites (CUDA graphs' static
        # outputs): run() then copies them, so that a caller may keep the results of earlier calls.
        self._outputs_reused = options.cuda_graphs or (
            device.type == "cuda" and options.compile_mode in _CUDAGRAPH_COMPILE_MODES
        )
        if options.compile_mode != "none":
            self._compiled_model = torch.compile(self.model, mode=compile_mode)
            self._forward = self._compiled_forward
            self.applied.append(f"torch.compile({compile_mode or 'default'})")
        if options.cuda_graphs:
            self._forward = _GraphedForward(self._forward)
            self.applied.append("cuda-graphs")

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32 and not self.half_weights:
            return torch.autocast(device_type="cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def _run_model(self, model, pixels: torch.Tensor, output_size, with_embedding: bool,
                   confidence_heads: tuple[tuple[int, float], ...] = ()) -> Prediction:
        if self.half_weights:
            pixels = pixels.to(self.dtype)
        heads = tuple(index for index, _ in confidence_heads)
        with self._autocast():
            out = model(pixels, output_size=output_size, aux_heads=heads or None)
            embedding = self.model.image_embedding(out.global_features) if with_embedding else None
        confidence = None
        if confidence_heads:
            weights = [weight for _, weight in confidence_heads]
            confidence = aux_agreement_confidence(out.depth[:, 0], [a[:, 0] for a in out.aux], weights)
        return Prediction(depth=out.depth[:, 0], embedding=embedding, confidence=confidence)

    def _plain_forward(self, pixels, output_size, with_embedding, confidence_heads=()):
        return self._run_model(self.model, pixels, output_size, with_embedding, confidence_heads)

    def _compiled_forward(self, pixels, output_size, with_embedding, confidence_heads=()):
        return self._run_model(self._compiled_model, pixels, output_size, with_embedding, confidence_heads)

    @property
    def auxiliary_heads(self) -> int:
        """How many auxiliary heads the model runs on request (the confidence map's inputs)."""
        return len(self.model.decoder.aux_heads)

    @torch.inference_mode()
    def run(
        self,
        pixels: torch.Tensor,
        output_size: tuple[int, int],
        with_embedding: bool,
        confidence_heads: tuple[tuple[int, float], ...] = (),
    ) -> Prediction:
        """Depth (and the embedding, and with ``confidence_heads``, (index, weight) of auxiliary
        heads, the confidence map of :mod:`space_clip_ros.model.confidence` from them) of a batch."""
        # inference_mode here too (not only in the predictor): a CUDA graph captured in inference
        # mode has inference-tensor static inputs, which cannot be written outside it.
        out = self._forward(pixels, tuple(output_size), with_embedding, tuple(confidence_heads))
        # One copy (and cast) out of graph-owned buffers; none for the plain forward's fresh tensors.
        copy = self._outputs_reused
        return Prediction(
            depth=out.depth.to(torch.float32, copy=copy),
            embedding=None if out.embedding is None else out.embedding.to(torch.float32, copy=copy),
            confidence=None if out.confidence is None else out.confidence.to(torch.float32, copy=copy),
        )

    def split_runners(self):
        """(encode, decode) callables for timing the encoder and the decoder apart."""

        def encode(pixels: torch.Tensor):
            with self._autocast():
                return self.model.forward_features(pixels.to(self.dtype) if self.half_weights else pixels)

        def decode(features, output_size: tuple[int, int]) -> torch.Tensor:
            with self._autocast():
                return self.model.decode(features, tuple(output_size)).depth

        return encode, decode

    def describe(self) -> str:
        return "torch eager" + (f" [{', '.join(self.applied)}]" if self.applied else "")
