"""Reduced precision in parts of the model, for CPUs with bf16 arithmetic (AVX-512-BF16, AMX).

* :class:`ReducedPrecisionDecoder`: the decoder's weights in bf16. The encoder's features are
  rounded to bf16 on the way in, and the depth map comes out at the decoder's own resolution,
  back in fp32 *before* the final bilinear resize to the requested size (resizing in bf16 would
  round every output depth to 8 significant bits: ~2 cm at 5 m).
* :func:`last_stage_in`: the decoder's last (full-resolution) semantic stage and depth head alone
  in bf16 (``ReducedPrecisionDecoder.finish``), after a graph that stops before it (ONNX Runtime's
  ``bf16_last_stage``: int8 everywhere else, where ONNX Runtime has no bf16 kernels).
* :func:`use_attention_dtype`: the encoder's attention products (query x key, attention x value)
  in bf16, the Linear layers around them as they are (int8 or fp32).

Both change the numbers within the tolerance of :mod:`space_clip_ros.inference.runtime.tolerance`
(measured in docs/benchmarks.md); the ``auto`` selection checks that on the model it runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ...model.decoder import DualPathwayDecoder, LastStageInputs, SpaceClipOutput
from ...model.layers import resize_to
from .attention import SdpaSelfAttention
from .fusion import fold_batch_norms


def _cast_layers(hidden, layers: tuple[int, ...], dtype: torch.dtype):
    """The encoder layers the decoder reads, in ``dtype``; the others are not copied (None)."""
    if isinstance(hidden, Mapping):
        return {layer: hidden[layer].to(dtype) for layer in layers}
    if isinstance(hidden, Sequence):
        return [item.to(dtype) if index in layers else None for index, item in enumerate(hidden)]
    raise TypeError(f"hidden must be a sequence or a mapping of layers, got {type(hidden).__name__}")


class Float32(nn.Module):
    """Runs ``module`` in fp32 inside a reduced-precision network (input cast up, output left fp32)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float())

    def _apply(self, fn, recurse=True):  # a later .to(bf16) of the decoder leaves this part fp32
        super()._apply(fn, recurse)
        self.module.float()
        return self


def _keep_last_convolution_fp32(head: nn.Module) -> bool:
    """Put the last convolution of a depth head in fp32: it maps features to metres, scaled and shifted
    by the depth range, and its rounding to bf16 is most of a bf16 decoder's depth error."""
    net = getattr(head, "net", None)
    if not isinstance(net, nn.Sequential):
        return False
    for index in range(len(net) - 1, -1, -1):
        if isinstance(net[index], nn.Conv2d):
            net[index] = Float32(net[index])
            return True
    return False


class ReducedPrecisionDecoder(nn.Module):
    """A :class:`DualPathwayDecoder` run in ``dtype`` (its weights cast), fp32 in and out.

    Takes the decoder's arguments and returns what it returns; the depth (and any auxiliary map)
    is computed at the decoder's native resolution (patch grid x 2 per stage), cast to fp32 and
    then resized to ``output_size``. ``global_features`` come back as given (fp32), so the CLIP
    embedding is projected from the encoder's own values.
    """

    def __init__(self, decoder: DualPathwayDecoder, dtype: torch.dtype = torch.bfloat16,
                 fp32_last_convolution: bool = True) -> None:
        super().__init__()
        self.inner = decoder.to(dtype)
        self.dtype = dtype
        if fp32_last_convolution:
            for head in (decoder.head, *decoder.aux_heads):
                _keep_last_convolution_fp32(head)

    # What callers read from a decoder.
    @property
    def config(self):
        return self.inner.config

    @property
    def aux_heads(self) -> nn.ModuleList:
        return self.inner.aux_heads

    @property
    def required_layers(self) -> tuple[int, ...]:
        return self.inner.required_layers

    def native_size(self, grid: tuple[int, int]) -> tuple[int, int]:
        scale = 2 ** len(self.inner.semantic_stages)
        return int(grid[0]) * scale, int(grid[1]) * scale

    def forward(
        self,
        hidden,
        global_features: torch.Tensor,
        grid: tuple[int, int],
        output_size: tuple[int, int],
        *args,
        **kwargs,
    ) -> SpaceClipOutput:
        hidden = _cast_layers(hidden, self.inner.required_layers, self.dtype)
        out = self.inner(hidden, global_features.to(self.dtype), grid, self.native_size(grid), *args, **kwargs)
        size = tuple(output_size)
        return SpaceClipOutput(
            depth=resize_to(out.depth.float(), size),
            global_features=global_features,
            aux=[resize_to(aux.float(), size) for aux in out.aux],
        )

    def finish(self, inputs: LastStageInputs, output_size: tuple[int, int]) -> torch.Tensor:
        """``DualPathwayDecoder.finish`` in ``dtype``: the inputs cast (NHWC, the layout oneDNN's
        convolutions want), the depth computed at the stage's own resolution (twice the input's) and
        back in fp32 before the resize to ``output_size``. Depth (B, 1, H, W) fp32."""

        def cast(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(self.dtype, memory_format=torch.channels_last)

        native = (int(inputs.x.shape[-2]) * 2, int(inputs.x.shape[-1]) * 2)
        depth = self.inner.finish(LastStageInputs(cast(inputs.x), cast(inputs.semantic_skip),
                                                  cast(inputs.structural_skip)), native)
        return resize_to(depth.float(), tuple(output_size))


def last_stage_in(decoder: DualPathwayDecoder, dtype: torch.dtype = torch.bfloat16) -> ReducedPrecisionDecoder:
    """A copy of ``decoder`` (eval mode, batch norm folded, NHWC) in ``dtype`` whose ``finish`` runs
    its last stage and depth head; ``decoder`` itself is left as it is. The stages before the last
    are copied too (they are small: ~1/10 of the decoder's weights) but not run."""
    prepared = copy.deepcopy(decoder).eval().requires_grad_(False)
    fold_batch_norms(prepared)
    prepared.to(memory_format=torch.channels_last)
    return ReducedPrecisionDecoder(prepared, dtype)


def use_attention_dtype(module: nn.Module, dtype: torch.dtype | None) -> int:
    """Run the attention products of every :class:`SdpaSelfAttention` in ``module`` in ``dtype``
    (None: the projections' own type); returns how many modules were set."""
    count = 0
    for child in module.modules():
        if isinstance(child, SdpaSelfAttention):
            child.compute_dtype = dtype
            count += 1
    return count
