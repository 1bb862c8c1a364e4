"""The tiny test model: one definition for the tests, the benchmark's ``--tiny``, the demo's quick
mode and ``config/train/synthetic.yaml`` (a test keeps that file's model section equal to it).

A real open_clip ViT-B/16 with its 12 blocks but a width of 64, so the reference decoder layers
[12, 9, 6, 3] / [2, 1, 0] apply unchanged and a frame takes milliseconds on a CPU, and a small
decoder. Plain values here (no torch import: the demo's recorder process reads them);
:func:`tiny_model_config` builds the model configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from space_clip_ros.model import ModelConfig

#: open_clip ``vision_cfg`` entries that narrow ViT-B-16 to the tiny tower.
TINY_VISION_OVERRIDES: dict[str, Any] = {"width": 64, "head_width": 32}
#: DecoderConfig fields of the tiny decoder.
TINY_DECODER: dict[str, Any] = {"channels": [32, 16, 16, 8], "film_hidden": 32}


def tiny_model_config(pretrained: str | None = None) -> ModelConfig:
    """The tiny model's configuration; random backbone weights unless ``pretrained`` names a
    weights file of the tiny tower."""
    from space_clip_ros.model import BackboneConfig, DecoderConfig, ModelConfig

    return ModelConfig(
        backbone=BackboneConfig(name="ViT-B-16", pretrained=pretrained, vision_overrides=dict(TINY_VISION_OVERRIDES)),
        decoder=DecoderConfig.from_dict(dict(TINY_DECODER)),
    )
