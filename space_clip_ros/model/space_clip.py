"""The full SPACE-CLIP model: frozen CLIP vision tower + trainable dual-pathway decoder."""

from __future__ import annotations

import torch
from torch import nn

from .backbone import BackboneFeatures, FrozenClipBackbone, build_backbone
from .config import ModelConfig
from .decoder import DualPathwayDecoder, SpaceClipOutput


class SpaceClip(nn.Module):
    """Normalised images at the encoder's input size in, metric depth at ``output_size`` out."""

    def __init__(self, config: ModelConfig, backbone: FrozenClipBackbone | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else build_backbone(config.backbone)
        self.decoder = DualPathwayDecoder(config.decoder, self.backbone.width, self.backbone.num_layers)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.backbone.input_size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.backbone.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.backbone.std

    def forward_features(self, images: torch.Tensor) -> BackboneFeatures:
        return self.backbone(images)

    def decode(
        self,
        features: BackboneFeatures,
        output_size: tuple[int, int] | None = None,
        aux_heads: tuple[int, ...] | None = None,
    ) -> SpaceClipOutput:
        """Run the decoder on (possibly cached) encoder features.

        The auxiliary maps come with every head in training mode; in eval mode only those of
        ``aux_heads`` (indices of the decoder's auxiliary heads; None or empty: none), which is
        what the confidence map (:mod:`.confidence`) compares the depth with.
        """
        size = tuple(output_size) if output_size is not None else self.input_size
        if self.training:
            with_aux, aux_heads = len(self.decoder.aux_heads) > 0, None
        else:
            with_aux = bool(aux_heads)
        return self.decoder(features.hidden, features.global_features, features.grid, size, with_aux=with_aux,
                            aux_heads=aux_heads)

    def forward(
        self,
        images: torch.Tensor,
        output_size: tuple[int, int] | None = None,
        aux_heads: tuple[int, ...] | None = None,
    ) -> SpaceClipOutput:
        return self.decode(self.forward_features(images), output_size, aux_heads)

    def image_embedding(self, global_features: torch.Tensor) -> torch.Tensor:
        """The CLIP image embedding (joint-space projection of the global vector)."""
        return self.backbone.project(global_features)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.decoder.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        encoder_total = sum(p.numel() for p in self.backbone.parameters())
        decoder_total = sum(p.numel() for p in self.decoder.parameters())
        return {
            "total": encoder_total + decoder_total,
            "frozen_encoder": encoder_total,
            "frozen_encoder_without_projection": encoder_total - self.backbone.projection_parameter_count(),
            "trainable_decoder": sum(p.numel() for p in self.trainable_parameters()),
            **{f"decoder.{k}": v for k, v in self.decoder.parameter_breakdown().items()},
        }
