"""Shared fixtures: small real open_clip backbones and an isolated ROS 2 domain per test session."""

from __future__ import annotations

import os
import random

import pytest

# Keep DDS discovery on this machine and away from other test runs sharing it.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))

# A real open_clip ViT with the reference depth (12 blocks) but a narrow width: the reference
# decoder layers [12, 9, 6, 3] / [2, 1, 0] apply unchanged, and it runs in milliseconds on a CPU.
TINY_VISION = {"width": 64, "head_width": 32}


@pytest.fixture(scope="session")
def tiny_backbone_config():
    from space_clip_ros.model import BackboneConfig

    return BackboneConfig(name="ViT-B-16", pretrained=None, vision_overrides=dict(TINY_VISION))


@pytest.fixture(scope="session")
def tiny_decoder_config():
    from space_clip_ros.model import DecoderConfig

    return DecoderConfig(channels=(32, 16, 16, 8), film_hidden=32)


@pytest.fixture(scope="session")
def tiny_model_config(tiny_backbone_config, tiny_decoder_config):
    from space_clip_ros.model import ModelConfig

    return ModelConfig(backbone=tiny_backbone_config, decoder=tiny_decoder_config)


@pytest.fixture(scope="session")
def reference_backbone():
    """Full-size ViT-B/16 with random weights (built once per session: ~1 s, 350 MB)."""
    from space_clip_ros.model import BackboneConfig, build_backbone

    return build_backbone(BackboneConfig(name="ViT-B-16"))
