"""Small building blocks of the dual-pathway decoder (SPEC section 3), one job each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (no-op when the size already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) patch tokens -> (B, C, rows, cols) feature map."""
    batch, count, channels = tokens.shape
    rows, cols = grid
    if rows * cols != count:
        raise ValueError(f"{count} tokens do not form a {rows}x{cols} patch grid")
    return tokens.transpose(1, 2).reshape(batch, channels, rows, cols)


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (no bias), batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class FiLMGenerator(nn.Module):
    """Global vector -> (gamma, beta) for one semantic layer; modulation is ``gamma * x + beta``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * width))

    def forward(self, tokens: torch.Tensor, global_features: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.net(global_features).unsqueeze(1).chunk(2, dim=-1)
        return gamma * tokens + beta  # plain gamma (not 1 + gamma), as the release does


class UpBlock(nn.Module):
    """Transposed convolution doubling the resolution, then a 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class SkipGate(nn.Module):
    """Gate a skip connection by the upsampled features: ``skip * (1 + sigmoid(conv1x1(up)))``."""

    def __init__(self, guide_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(guide_channels, skip_channels, kernel_size=1)

    def forward(self, skip: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return skip * (1.0 + torch.sigmoid(self.proj(guide)))


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-dropout-conv-BN, added to the input, then ReLU."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class StructuralStage(nn.Module):
    """Structural path stage: upsample, concatenate the projected shallow skip, fuse."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.up = UpBlock(in_channels, out_channels)
        self.fuse = ConvBNReLU(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        return self.fuse(torch.cat([up, resize_to(skip, up.shape[-2:])], dim=1))


class SemanticStage(nn.Module):
    """Semantic (main) path stage: upsample, gate and concatenate skips, fuse, residual refine."""

    def __init__(
        self, in_channels: int, out_channels: int, semantic_skip: int, structural_skip: int, dropout: float
    ) -> None:
        super().__init__()
        self.up = UpBlock(in_channels, out_channels)
        self.semantic_gate = SkipGate(out_channels, semantic_skip)
        self.structural_gate = SkipGate(out_channels, structural_skip) if structural_skip else None
        self.fuse = ConvBNReLU(out_channels + semantic_skip + structural_skip, out_channels)
        self.refine = ResidualBlock(out_channels, dropout)

    def forward(
        self, x: torch.Tensor, semantic_skip: torch.Tensor, structural_skip: torch.Tensor | None
    ) -> torch.Tensor:
        up = self.up(x)
        size = up.shape[-2:]
        parts = [up, self.semantic_gate(resize_to(semantic_skip, size), up)]
        if self.structural_gate is not None:
            if structural_skip is None:
                raise ValueError("this stage was built with a structural skip but none was given")
            parts.append(self.structural_gate(resize_to(structural_skip, size), up))
        return self.refine(self.fuse(torch.cat(parts, dim=1)))


class DepthHead(nn.Module):
    """Final head: conv-BN-ReLU to half the channels, 3x3 conv to one channel, ReLU (metres)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            ConvBNReLU(in_channels, in_channels // 2),
            nn.Conv2d(in_channels // 2, 1, 3, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AuxiliaryHead(nn.Module):
    """Multi-scale supervision head on an intermediate semantic stage (training only)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        mid = max(in_channels // 2, 16)
        self.net = nn.Sequential(
            ConvBNReLU(in_channels, mid),
            nn.Conv2d(mid, 1, kernel_size=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
