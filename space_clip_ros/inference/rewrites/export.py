"""ONNX export of the whole SPACE-CLIP model (encoder + decoder), for ONNX Runtime and TensorRT.

Two input kinds:

* ``pixels``: normalised float (B, 3, h, w) at the encoder's input size (224x224 for ViT-B/16).
  Preprocessing stays outside the graph, exactly as :func:`resize_and_normalize` does it (this is
  what the predictor's onnxruntime backend uses, so its depth equals the torch path's).
* ``image``: uint8 (B, H, W, 3) RGB at one fixed camera size, the way a robot receives frames.
  Conversion to float, the bicubic antialiased resize (as two matrix products, see
  :mod:`.resize`: exact, and supported by every runtime including TensorRT) and normalisation are
  inside the graph.

Outputs: ``depth`` (B, 1, H', W') in metres, H'xW' the requested output size (the decoder's native
224x224 map when none is asked for; the final bilinear resize is inside the graph otherwise), and
optionally ``embedding`` (B, D), the CLIP image embedding.

The graph is traced from an inference copy of the model (attention as SDPA, batch norm folded);
the caller's model is not changed.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...model import SpaceClip
from .attention import replace_multihead_attention
from .fusion import fold_batch_norms
from .resize import MatrixResize

logger = logging.getLogger(__name__)

PIXELS_INPUT = "pixels"
IMAGE_INPUT = "image"
DEPTH_OUTPUT = "depth"
EMBEDDING_OUTPUT = "embedding"
#: Outputs of a graph cut before the decoder's last stage (``rewrites.split``): the fields of
#: ``model.LastStageInputs``; the structural skip only where the last stage has one.
LAST_STAGE_OUTPUTS = ("last_stage_x", "last_stage_semantic_skip", "last_stage_structural_skip")


@dataclass(frozen=True)
class ExportOptions:
    """What the exported graph takes and gives.

    Attributes:
        opset: ONNX opset (17 covers everything used; TensorRT 8.6+ and ONNX Runtime 1.14+ read it).
        image_size: (H, W) of uint8 camera images fed to the graph (preprocessing inside it), or
            ``None`` for normalised float input at the encoder's size.
        output_size: (H, W) of the depth output; ``None`` gives ``image_size`` when that is set,
            else the decoder's native map (the encoder input size).
        dynamic_batch: leave the batch dimension free (otherwise fixed to ``batch_size``).
        batch_size: batch of the example input used for tracing (the fixed batch when not dynamic).
        with_embedding: add the CLIP image embedding as a second output.
    """

    opset: int = 17
    image_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    dynamic_batch: bool = False
    batch_size: int = 1
    with_embedding: bool = False

    def resolved_output_size(self, encoder_size: tuple[int, int]) -> tuple[int, int]:
        if self.output_size is not None:
            return (int(self.output_size[0]), int(self.output_size[1]))
        if self.image_size is not None:
            return (int(self.image_size[0]), int(self.image_size[1]))
        return (int(encoder_size[0]), int(encoder_size[1]))


class ImagePreprocess(nn.Module):
    """uint8 (B, H, W, 3) RGB -> normalised float (B, 3, h, w), the same maths as ``resize_and_normalize``."""

    def __init__(self, image_size: tuple[int, int], input_size: tuple[int, int], mean, std) -> None:
        super().__init__()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.resize = MatrixResize(self.image_size, input_size) if self.image_size != tuple(input_size) else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if self.resize is not None:
            x = self.resize(x).clamp(0.0, 1.0)
        return (x - self.mean) / self.std


class DepthGraph(nn.Module):
    """The module that gets traced: optional preprocessing, encoder, decoder, optional embedding."""

    def __init__(self, model: SpaceClip, options: ExportOptions) -> None:
        super().__init__()
        self.model = model
        self.with_embedding = options.with_embedding
        self.output_size = options.resolved_output_size(model.input_size)
        self.preprocess = (
            ImagePreprocess(options.image_size, model.input_size, model.mean, model.std)
            if options.image_size is not None
            else None
        )

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pixels = self.preprocess(inputs) if self.preprocess is not None else inputs
        output = self.model(pixels, output_size=self.output_size)
        if self.with_embedding:
            return output.depth, self.model.image_embedding(output.global_features)
        return (output.depth,)


class EncoderGraph(nn.Module):
    """Encoder alone: pixels -> the hidden layers the decoder reads, and the global vector."""

    def __init__(self, model: SpaceClip) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.layers = model.decoder.required_layers

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(pixels)
        return (*(features.hidden[layer] for layer in self.layers), features.global_features)


class DecoderGraph(nn.Module):
    """Decoder alone: the encoder's hidden layers and global vector -> depth at the native size."""

    def __init__(self, model: SpaceClip) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.layers = model.decoder.required_layers
        self.grid = model.backbone.grid_size
        self.input_size = tuple(model.input_size)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        hidden = dict(zip(self.layers, features[:-1]))
        return self.decoder(hidden, features[-1], self.grid, self.input_size).depth


def part_input_names(model: SpaceClip) -> list[str]:
    """Names of the tensors passed from the encoder graph to the decoder graph."""
    return [f"hidden_{layer}" for layer in model.decoder.required_layers] + ["global_features"]


def inference_copy(model: SpaceClip) -> SpaceClip:
    """A frozen eval-mode copy with SDPA attention and folded batch norm (exact re-writes, no rounding)."""
    inference_model = copy.deepcopy(model).eval().requires_grad_(False)
    replace_multihead_attention(inference_model.backbone)
    fold_batch_norms(inference_model.decoder)
    return inference_model


def example_input(model: SpaceClip, options: ExportOptions) -> torch.Tensor:
    device = next(model.parameters()).device
    if options.image_size is not None:
        height, width = options.image_size
        return torch.randint(0, 256, (options.batch_size, int(height), int(width), 3), dtype=torch.uint8, device=device)
    height, width = model.input_size
    return torch.randn(options.batch_size, 3, int(height), int(width), device=device)


def _trace_to_onnx(graph: nn.Module, inputs: tuple[torch.Tensor, ...], target, opset: int, input_names, output_names,
                   dynamic_axes) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter warns about its own deprecation and about traced shape arithmetic that is
        # constant for a fixed-size graph; neither concerns the result.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            graph,
            inputs,
            target,
            dynamo=False,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def export_parts(
    model: SpaceClip, encoder_destination, decoder_destination, opset: int = 17
) -> None:
    """Export the encoder and the decoder as two graphs (dynamic batch), e.g. to time them apart
    or to feed the decoder from an encoder that another node already runs."""
    inference_model = inference_copy(model)
    encoder, decoder = EncoderGraph(inference_model).eval(), DecoderGraph(inference_model).eval()
    pixels = example_input(inference_model, ExportOptions())
    names = part_input_names(inference_model)
    with torch.no_grad():
        features = encoder(pixels)
    batch_axis = {0: "batch"}
    _trace_to_onnx(encoder, (pixels,), _target(encoder_destination), opset, [PIXELS_INPUT], names,
                   {name: batch_axis for name in [PIXELS_INPUT, *names]})
    _trace_to_onnx(decoder, tuple(features), _target(decoder_destination), opset, names, [DEPTH_OUTPUT],
                   {name: batch_axis for name in [*names, DEPTH_OUTPUT]})


def _target(destination: str | os.PathLike | io.BytesIO):
    return destination if isinstance(destination, io.BytesIO) else str(Path(destination))


def export_onnx(model: SpaceClip, destination: str | os.PathLike | io.BytesIO, options: ExportOptions) -> None:
    """Trace ``model`` (unchanged) with the TorchScript ONNX exporter and write the graph to ``destination``.

    The TorchScript exporter is used because it needs no extra package (the dynamo exporter needs
    onnxscript) and handles every op of this model at opset 17.
    """
    graph = DepthGraph(inference_copy(model), options).eval()
    inputs = example_input(graph.model, options)
    input_name = IMAGE_INPUT if options.image_size is not None else PIXELS_INPUT
    output_names = [DEPTH_OUTPUT] + ([EMBEDDING_OUTPUT] if options.with_embedding else [])
    dynamic_axes = None
    if options.dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in [input_name, *output_names]}
    _trace_to_onnx(graph, (inputs,), _target(destination), options.opset, [input_name], output_names, dynamic_axes)
    logger.info(
        "exported SPACE-CLIP to ONNX (opset %d, input %s %s, depth %s%s)",
        options.opset,
        input_name,
        tuple(inputs.shape),
        graph.output_size,
        ", embedding" if options.with_embedding else "",
    )


def trtexec_command(onnx_path: str | os.PathLike, options: ExportOptions, encoder_size: tuple[int, int],
                    max_batch: int = 8) -> str:
    """The ``trtexec`` line that builds an fp16 TensorRT engine from a graph exported with ``options``."""
    onnx_path = Path(onnx_path)
    command = f"trtexec --onnx={onnx_path} --fp16 --saveEngine={onnx_path.with_suffix('.engine')}"
    if options.dynamic_batch:
        if options.image_size is not None:
            name, rest = IMAGE_INPUT, f"{options.image_size[0]}x{options.image_size[1]}x3"
        else:
            name, rest = PIXELS_INPUT, f"3x{encoder_size[0]}x{encoder_size[1]}"
        command += f" --minShapes={name}:1x{rest} --optShapes={name}:1x{rest} --maxShapes={name}:{max_batch}x{rest}"
    return command
