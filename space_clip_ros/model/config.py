"""Configuration dataclasses for the SPACE-CLIP model (SPEC sections 2 and 3).

Everything needed to rebuild a model is in these objects; they round-trip through plain dicts
so that a checkpoint's JSON record can carry them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# OpenAI CLIP normalisation; open_clip reports the same values for its OpenAI-style towers.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class BackboneConfig:
    """Which frozen CLIP vision tower to read.

    Attributes:
        name: open_clip model name, e.g. ``ViT-B-16`` or ``ViT-B-16-SigLIP``.
        pretrained: an open_clip pretrained tag (``openai``, ``webli``), a path to a local weights
            file (a full open_clip checkpoint or a vision-only state dict), or ``None`` for random
            weights (tests and offline demos only).
        vision_overrides: keys replacing entries of open_clip's ``vision_cfg`` (e.g. a narrow
            ``width`` for fast tests). Only allowed with random or local weights.
    """

    name: str = "ViT-B-16"
    pretrained: str | None = None
    vision_overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pretrained": self.pretrained, "vision_overrides": dict(self.vision_overrides)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneConfig:
        return cls(
            name=data["name"],
            pretrained=data.get("pretrained"),
            vision_overrides=dict(data.get("vision_overrides") or {}),
        )

    def identity(self) -> dict[str, Any]:
        """What makes two backbones produce the same features (used to check checkpoints and caches).

        ``pretrained`` is reduced to its tag or file name: the same weights may live at another path
        on the robot than on the training machine.
        """
        pretrained = self.pretrained
        if pretrained is not None and ("/" in pretrained or "\\" in pretrained):
            pretrained = pretrained.replace("\\", "/").rsplit("/", 1)[-1]
        return {"name": self.name, "pretrained": pretrained, "vision_overrides": dict(self.vision_overrides)}


def backbone_from_options(
    name: str | None, pretrained: str | None, vision_overrides: str | dict[str, Any] | None
) -> BackboneConfig | None:
    """The backbone a user's options ask for, or None to take the checkpoint's (node and CLIs alike).

    Options left unset (None or empty) say nothing; once any of the three is set, the three
    describe the backbone: no name means ViT-B-16, no weights mean random weights, and
    ``vision_overrides`` may be a JSON object's text. ``load_model`` checks it against the checkpoint.
    """
    if not (name or pretrained or vision_overrides):
        return None
    if isinstance(vision_overrides, str):
        overrides = json.loads(vision_overrides) if vision_overrides else {}
    else:
        overrides = dict(vision_overrides or {})
    return BackboneConfig(name=name or BackboneConfig.name, pretrained=pretrained or None, vision_overrides=overrides)


@dataclass(frozen=True)
class DecoderConfig:
    """Dual-pathway decoder settings; the defaults are the reference configuration of SPEC section 3."""

    channels: tuple[int, ...] = (256, 128, 64, 32)
    semantic_layers: tuple[int, ...] = (12, 9, 6, 3)
    structural_layers: tuple[int, ...] = (2, 1, 0)
    film_hidden: int = 256
    dropout: float = 0.1
    use_film: bool = True
    use_structural_pathway: bool = True
    aux_heads: bool = True
    # Number of leading semantic stages with an auxiliary head (SPEC: stages 0..2).
    num_aux_heads: int = 3

    def __post_init__(self) -> None:
        # Lists from JSON/YAML become tuples so configs compare and hash reliably.
        for name in ("channels", "semantic_layers", "structural_layers"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.channels) != len(self.semantic_layers):
            raise ValueError(
                f"channels has {len(self.channels)} entries but semantic_layers has "
                f"{len(self.semantic_layers)}; the decoder needs one semantic layer per stage"
            )
        if self.use_structural_pathway and len(self.structural_layers) > len(self.channels):
            raise ValueError(
                f"structural_layers has {len(self.structural_layers)} entries, more than the "
                f"{len(self.channels)} decoder stages"
            )
        if self.use_structural_pathway and not self.structural_layers:
            raise ValueError("use_structural_pathway is true but structural_layers is empty")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.aux_heads and not 0 < self.num_aux_heads < len(self.channels):
            raise ValueError(
                f"num_aux_heads must be in [1, {len(self.channels) - 1}] (the last stage feeds the main head)"
            )

    @property
    def active_structural_layers(self) -> tuple[int, ...]:
        return self.structural_layers if self.use_structural_pathway else ()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("channels", "semantic_layers", "structural_layers"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown decoder config keys: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class ModelConfig:
    """A complete SPACE-CLIP model: backbone, decoder, and the depth range it predicts."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone.to_dict(), "decoder": self.decoder.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(
            backbone=BackboneConfig.from_dict(data.get("backbone", {"name": "ViT-B-16"})),
            decoder=DecoderConfig.from_dict(data.get("decoder", {})),
        )

