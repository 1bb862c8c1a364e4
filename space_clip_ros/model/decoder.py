"""The dual-pathway decoder of SPACE-CLIP (SPEC section 3).

Semantic path: FiLM-modulated deep layers (S), projected and gated into every stage.
Structural path: unmodulated shallow layers (T), refined in their own stages and gated into the
first ``len(T)`` semantic stages. Each stage doubles the resolution (14 -> 28 -> 56 -> 112 -> 224
for ViT-B/16 at 224x224); the head resizes the map to the requested output size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import DecoderConfig
from .layers import (
    AuxiliaryHead,
    DepthHead,
    FiLMGenerator,
    SemanticStage,
    StructuralStage,
    resize_to,
    tokens_to_map,
)


@dataclass
class SpaceClipOutput:
    """What the model (and its decoder alone, on cached features) returns for a batch."""

    depth: torch.Tensor  # (B, 1, H, W) metric depth in metres
    global_features: torch.Tensor  # (B, width), pre-projection; ``model.image_embedding`` projects it
    # Auxiliary depth maps (B, 1, H, W), in head order: every head in training, the heads asked
    # for at inference (``aux_heads``: what the confidence map compares the depth with).
    aux: list[torch.Tensor] = field(default_factory=list)


@dataclass
class LastStageInputs:
    """What the decoder's last semantic stage reads: the previous stage's map (the first projected
    semantic map for a one-stage decoder), its semantic skip, and its structural skip (None when the
    structural path is shorter than the semantic one, as in the reference configuration)."""

    x: torch.Tensor
    semantic_skip: torch.Tensor
    structural_skip: torch.Tensor | None


def _projection(width: int, channels: int) -> nn.Conv2d:
    return nn.Conv2d(width, channels, kernel_size=1)


class DualPathwayDecoder(nn.Module):
    def __init__(self, config: DecoderConfig, width: int, num_layers: int) -> None:
        super().__init__()
        self.config = config
        self.width = width
        channels = config.channels
        semantic = config.semantic_layers
        structural = config.active_structural_layers
        for layer in (*semantic, *structural):
            if not 0 <= layer <= num_layers:
                raise ValueError(f"decoder reads layer {layer}, but the encoder has layers 0..{num_layers}")

        self.film = (
            nn.ModuleList(FiLMGenerator(width, config.film_hidden) for _ in semantic) if config.use_film else None
        )
        self.semantic_proj = nn.ModuleList(_projection(width, c) for c in channels)
        self.structural_proj = nn.ModuleList(_projection(width, channels[i]) for i in range(len(structural)))

        structural_in = [width] + list(channels[: max(len(structural) - 1, 0)])
        self.structural_stages = nn.ModuleList(
            StructuralStage(structural_in[i], channels[i], channels[i]) for i in range(len(structural))
        )
        semantic_in = [channels[0]] + list(channels[:-1])
        self.semantic_stages = nn.ModuleList(
            SemanticStage(
                semantic_in[i],
                channels[i],
                semantic_skip=channels[i],
                structural_skip=channels[i] if i < len(structural) else 0,
                dropout=config.dropout,
            )
            for i in range(len(channels))
        )
        self.head = DepthHead(channels[-1])
        num_aux = config.num_aux_heads if config.aux_heads else 0
        self.aux_heads = nn.ModuleList(AuxiliaryHead(channels[i]) for i in range(num_aux))

    @property
    def required_layers(self) -> tuple[int, ...]:
        """Encoder layers this decoder reads (what a feature cache must keep)."""
        return tuple(sorted(set(self.config.semantic_layers) | set(self.config.active_structural_layers)))

    def forward(
        self,
        hidden: Sequence[torch.Tensor] | dict[int, torch.Tensor],
        global_features: torch.Tensor,
        grid: tuple[int, int],
        output_size: tuple[int, int],
        with_aux: bool = False,
        aux_heads: Sequence[int] | None = None,
    ) -> SpaceClipOutput:
        """Decode encoder features.

        Args:
            hidden: patch tokens (B, N, width) indexable by layer (a list of all layers or a dict of
                the required ones).
            global_features: (B, width) global vector conditioning FiLM.
            grid: patch grid (rows, cols).
            output_size: (H, W) of the returned depth map.
            with_aux: also return the auxiliary maps (resized to ``output_size``).
            aux_heads: with ``with_aux``, which heads (indices into ``aux_heads``), in that order;
                None: all of them. Heads not asked for are not run.
        """
        wanted = range(len(self.aux_heads)) if aux_heads is None else tuple(aux_heads)
        for head in wanted:
            if not 0 <= head < len(self.aux_heads):
                raise ValueError(f"aux head {head} asked for, but the decoder has {len(self.aux_heads)}")
        semantic_maps, structural_outputs = self.skip_maps(hidden, global_features, grid)
        computed: dict[int, torch.Tensor] = {}
        x = semantic_maps[0]
        for i, stage in enumerate(self.semantic_stages):
            x = stage(x, *self._skips(i, semantic_maps, structural_outputs))
            if with_aux and i in wanted:
                computed[i] = resize_to(self.aux_heads[i](x), output_size)
        aux = [computed[head] for head in wanted] if with_aux else []

        depth = resize_to(self.head(x), output_size)
        return SpaceClipOutput(depth=depth, global_features=global_features, aux=aux)

    def skip_maps(
        self, hidden: Sequence[torch.Tensor] | dict[int, torch.Tensor], global_features: torch.Tensor,
        grid: tuple[int, int],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(semantic maps, structural outputs): the FiLM-modulated, projected deep layers (one per
        semantic stage) and the structural stages' outputs (one per active structural layer)."""
        semantic_maps = []
        for i, layer in enumerate(self.config.semantic_layers):
            tokens = hidden[layer]
            if self.film is not None:
                tokens = self.film[i](tokens, global_features)
            semantic_maps.append(self.semantic_proj[i](tokens_to_map(tokens, grid)))

        structural_outputs: list[torch.Tensor] = []
        structural = self.config.active_structural_layers
        if structural:
            x = tokens_to_map(hidden[structural[0]], grid)
            for i, layer in enumerate(structural):
                skip = self.structural_proj[i](tokens_to_map(hidden[layer], grid))
                x = self.structural_stages[i](x, skip)
                structural_outputs.append(x)
        return semantic_maps, structural_outputs

    @staticmethod
    def _skips(stage: int, semantic_maps: list[torch.Tensor],
               structural_outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The semantic and (for the first ``len(T)`` stages) structural skip of semantic stage ``stage``."""
        return semantic_maps[stage], structural_outputs[stage] if stage < len(structural_outputs) else None

    def last_stage_inputs(
        self, hidden: Sequence[torch.Tensor] | dict[int, torch.Tensor], global_features: torch.Tensor,
        grid: tuple[int, int],
    ) -> LastStageInputs:
        """Everything before the last (full-resolution) semantic stage: what :meth:`finish` takes.

        ``finish(last_stage_inputs(...), size)`` is ``forward(...).depth``, computed in two parts so
        that a runtime can run them in different precisions (``rewrites.precision``)."""
        semantic_maps, structural_outputs = self.skip_maps(hidden, global_features, grid)
        last = len(self.semantic_stages) - 1
        x = semantic_maps[0]
        for i in range(last):
            x = self.semantic_stages[i](x, *self._skips(i, semantic_maps, structural_outputs))
        return LastStageInputs(x, *self._skips(last, semantic_maps, structural_outputs))

    def finish(self, inputs: LastStageInputs, output_size: tuple[int, int]) -> torch.Tensor:
        """The last semantic stage, the depth head and the resize to ``output_size``: depth (B, 1, H, W)."""
        x = self.semantic_stages[-1](inputs.x, inputs.semantic_skip, inputs.structural_skip)
        return resize_to(self.head(x), output_size)

    def parameter_breakdown(self) -> dict[str, int]:
        """Trainable parameters per part (batch-norm running statistics are buffers, not counted)."""

        def count(module: nn.Module | None) -> int:
            return 0 if module is None else sum(p.numel() for p in module.parameters())

        semantic_blocks = count(self.semantic_stages)
        return {
            "film_generators": count(self.film),
            "semantic_projections": count(self.semantic_proj),
            "structural_projections": count(self.structural_proj),
            "structural_blocks": count(self.structural_stages),
            "semantic_blocks": semantic_blocks,
            "final_head": count(self.head),
            "auxiliary_heads": count(self.aux_heads),
        }
