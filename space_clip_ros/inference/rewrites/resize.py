"""Image resizing written as two matrix products, so that it exports to ONNX and TensorRT exactly.

The encoder sees the image after a bicubic, antialiased resize (SPEC section 3; what CLIP's own
preprocessing does). ONNX can only express antialiasing from opset 18 on, the TorchScript exporter
does not translate ``antialias=True`` at all, and TensorRT's resize layer has no antialias mode.
Any fixed-size separable resize is linear along each axis, though: ``out = Wh @ image @ Ww^T``
with an (out_h, in_h) and an (out_w, in_w) weight matrix. The matrices are read off PyTorch's own
kernel (resizing an identity image along one axis), so the result equals
``F.interpolate(..., mode="bicubic", antialias=True)`` up to float rounding, on every runtime.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_weights(in_size: int, out_size: int, mode: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """The (out_size, in_size) matrix of a 1-D resize, as PyTorch's ``F.interpolate`` computes it.

    Resizing an (in, in) identity image to (out, in) leaves the untouched axis as is (at scale 1
    the bicubic kernel is 1 at distance 0 and 0 at every other integer), so column j of the
    result is the response to a unit impulse at input row j: the resize matrix itself.
    """
    identity = torch.eye(in_size, dtype=torch.float64)[None, None]
    if out_size == in_size:
        return identity[0, 0].float()
    weights = F.interpolate(identity, size=(out_size, in_size), mode=mode, align_corners=False, antialias=antialias)
    return weights[0, 0].float()


class MatrixResize(nn.Module):
    """Fixed-size separable resize of (B, C, H, W) images via two matrix products.

    Args:
        in_size: (H, W) of the inputs this module is built for.
        out_size: (H', W') of its outputs.
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int], mode: str = "bicubic") -> None:
        super().__init__()
        self.in_size = (int(in_size[0]), int(in_size[1]))
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.register_buffer("rows", resize_weights(self.in_size[0], self.out_size[0], mode), persistent=False)
        self.register_buffer("cols_t", resize_weights(self.in_size[1], self.out_size[1], mode).t().contiguous(),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.in_size:
            raise ValueError(f"MatrixResize built for {self.in_size} inputs, got {tuple(images.shape[-2:])}")
        # Width first: it shrinks the larger axis of landscape camera images, so the second product is small.
        narrowed = torch.matmul(images, self.cols_t.to(images.dtype))
        return torch.matmul(self.rows.to(images.dtype), narrowed)
