"""A drop-in replacement for open_clip's ``nn.MultiheadAttention`` built for inference.

open_clip's ``ResidualAttentionBlock`` keeps its attention in ``nn.MultiheadAttention``, whose input
projection is a raw ``in_proj_weight`` Parameter and whose output projection is a
``NonDynamicallyQuantizableLinear``. Neither can be dynamically quantised, and in no-grad mode the
module takes the ``_native_multi_head_attention`` fast path, which the TorchScript ONNX exporter
cannot translate. :class:`SdpaSelfAttention` holds the same weights in two plain ``nn.Linear``
layers and calls ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA,
a fused kernel on CPU), so the same module serves the GPU fast path, int8 quantisation and export.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class SdpaSelfAttention(nn.Module):
    """Self-attention with the call signature ``nn.MultiheadAttention`` has inside open_clip blocks.

    Args:
        width: model width (embedding size).
        num_heads: attention heads; ``width`` must be divisible by it.
        batch_first: token layout of the inputs, as in the replaced module.
    """

    def __init__(self, width: int, num_heads: int, batch_first: bool = True) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} heads")
        self.width = width
        self.num_heads = num_heads
        self.batch_first = batch_first
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        # The attention products' type (None: the projections' output type, through SDPA). bf16 on CPUs
        # with bf16 arithmetic: query, key and value are rounded to bf16, multiplied in two batched
        # GEMMs, and the result comes back in the projections' type (rewrites.precision.use_attention_dtype).
        self.compute_dtype: torch.dtype | None = None

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention) -> SdpaSelfAttention:
        """Copy the weights of a self-attention ``nn.MultiheadAttention`` (packed in-projection, with bias)."""
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise ValueError("only self-attention with a packed in-projection can be replaced")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("nn.MultiheadAttention with bias_k/bias_v or add_zero_attn is not supported")
        attention = cls(mha.embed_dim, mha.num_heads, batch_first=mha.batch_first)
        weight = mha.in_proj_weight.detach()
        attention = attention.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            attention.qkv.weight.copy_(weight)
            if mha.in_proj_bias is not None:
                attention.qkv.bias.copy_(mha.in_proj_bias.detach())
            else:
                attention.qkv.bias.zero_()
            attention.out_proj.weight.copy_(mha.out_proj.weight.detach())
            if mha.out_proj.bias is not None:
                attention.out_proj.bias.copy_(mha.out_proj.bias.detach())
            else:
                attention.out_proj.bias.zero_()
        attention.requires_grad_(False)
        return attention

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        if key is not None and key is not query or value is not None and value is not query:
            raise ValueError("SdpaSelfAttention only does self-attention (key and value must be the query)")
        if need_weights:
            raise ValueError("SdpaSelfAttention does not return attention weights")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, tokens, width = x.shape
        head_dim = width // self.num_heads
        # (B, N, 3, heads, head_dim) -> three (B, heads, N, head_dim) views, no copy before SDPA.
        qkv = self.qkv(x)
        dtype = qkv.dtype
        if self.compute_dtype is not None:
            qkv = qkv.to(self.compute_dtype)
        qkv = qkv.view(batch, tokens, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # nn.MultiheadAttention: True = may NOT attend; SDPA's boolean mask means the opposite.
            # An additive float mask means the same to both.
            attn_mask = torch.zeros(attn_mask.shape, dtype=qkv.dtype, device=attn_mask.device).masked_fill_(
                attn_mask, float("-inf")
            )
        elif attn_mask is not None:
            attn_mask = attn_mask.to(qkv.dtype)
        if self.compute_dtype is None:
            attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        else:
            # Reduced precision: two plain batched products (oneDNN's bf16 GEMMs) around the softmax;
            # measured twice as fast as CPU SDPA in bf16, which gains nothing over fp32 at 197 tokens.
            scores = torch.matmul(qkv[0] * head_dim**-0.5, qkv[1].transpose(-2, -1))
            if attn_mask is not None:
                scores = scores + attn_mask
            attended = torch.matmul(scores.softmax(dim=-1), qkv[2])
        out = self.out_proj(attended.transpose(1, 2).reshape(batch, tokens, width).to(dtype))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _is_self_attention_block(parent: nn.Module) -> bool:
    """open_clip's ResidualAttentionBlock without a key/value norm calls its attention as self-attention."""
    return type(parent).__name__ == "ResidualAttentionBlock" and not hasattr(parent, "ln_1_kv")


def replace_multihead_attention(module: nn.Module) -> int:
    """Swap the ``nn.MultiheadAttention`` of open_clip's self-attention blocks for :class:`SdpaSelfAttention`.

    Returns the number of modules replaced. Other attention modules (attention pooling,
    cross-attention, separate q/k/v weights) are left as they are.
    """
    replaced = 0
    for parent in list(module.modules()):
        if not _is_self_attention_block(parent):
            continue
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.MultiheadAttention):
                continue
            try:
                setattr(parent, name, SdpaSelfAttention.from_multihead_attention(child))
                replaced += 1
            except ValueError as exc:
                logger.info("kept nn.MultiheadAttention %s: %s", name, exc)
    return replaced
