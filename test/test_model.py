"""The SPACE-CLIP model against SPEC sections 2 and 3."""

from __future__ import annotations

import pytest
import torch

from space_clip_ros.model import (
    BackboneConfig,
    DecoderConfig,
    ModelConfig,
    SpaceClip,
    build_backbone,
    save_vision_weights,
)
from space_clip_ros.model.preprocess import resize_and_normalize

REFERENCE_SUBTOTALS = {
    "film_generators": 2_366_464,
    "semantic_projections": 369_120,
    "structural_projections": 344_512,
    "structural_blocks": 3_274_944,
    "semantic_blocks": 5_303_424,
    "final_head": 4_785,
    "auxiliary_heads": 387_747,
}


@pytest.fixture(scope="module")
def reference_model(reference_backbone):
    return SpaceClip(ModelConfig(), backbone=reference_backbone)


def test_reference_parameter_counts(reference_model):
    counts = reference_model.parameter_counts()
    assert counts["trainable_decoder"] == 12_050_996
    assert sum(REFERENCE_SUBTOTALS.values()) == 12_050_996
    for part, expected in REFERENCE_SUBTOTALS.items():
        assert counts[f"decoder.{part}"] == expected, part
    # SPEC section 2: the vision encoder with and without the final projection.
    assert counts["frozen_encoder"] == 86_192_640
    assert counts["frozen_encoder_without_projection"] == 85_799_424


def test_ablations_remove_exactly_their_parts(reference_backbone):
    no_film = SpaceClip(ModelConfig(decoder=DecoderConfig(use_film=False)), backbone=reference_backbone)
    assert no_film.parameter_counts()["trainable_decoder"] == 12_050_996 - REFERENCE_SUBTOTALS["film_generators"]

    no_struct = SpaceClip(
        ModelConfig(decoder=DecoderConfig(use_structural_pathway=False)), backbone=reference_backbone
    )
    counts = no_struct.parameter_counts()
    assert counts["decoder.structural_blocks"] == 0
    assert counts["decoder.structural_projections"] == 0
    # Semantic stages 0..2 lose their structural gate (1x1 conv C->C with bias) and the C input
    # channels of their fusion conv (3x3, no bias): 256, 128 and 64 channels.
    lost_in_semantic = sum((c * c + c) + (c * c * 9) for c in (256, 128, 64))
    assert counts["decoder.semantic_blocks"] == REFERENCE_SUBTOTALS["semantic_blocks"] - lost_in_semantic
    expected = 12_050_996 - 3_274_944 - 344_512 - lost_in_semantic
    assert counts["trainable_decoder"] == expected


@pytest.mark.slow  # full-size ViT-B/16
def test_backbone_contract(reference_backbone):
    bb = reference_backbone
    assert (bb.input_size, bb.patch_size, bb.width, bb.num_layers) == ((224, 224), 16, 768, 12)
    assert bb.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert bb.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    images = torch.randn(1, 3, 224, 224)
    feats = bb(images)
    assert len(feats.hidden) == 13
    assert all(h.shape == (1, 196, 768) for h in feats.hidden)  # class token removed
    assert feats.grid == (14, 14)
    # hidden[12] is the last block's output; the global vector is its class token through ln_post.
    full = bb.visual._embeds(images)
    for block in bb.visual.transformer.resblocks:
        full = block(full)
    torch.testing.assert_close(feats.hidden[12], full[:, 1:])
    torch.testing.assert_close(feats.global_features, bb.visual.ln_post(full[:, 0]))
    # Projected, it is exactly open_clip's own image embedding.
    torch.testing.assert_close(bb.project(feats.global_features), bb.visual(images), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # full-size ViT-B/16
def test_backbone_is_frozen_and_untouched_by_training(tiny_model_config):
    model = SpaceClip(tiny_model_config)
    model.train()
    assert not model.backbone.visual.training  # stays in eval mode
    assert all(not p.requires_grad for p in model.backbone.parameters())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    images = torch.randn(2, 3, 224, 224)
    out = model(images, output_size=(32, 64))
    loss = out.depth.mean() + sum(a.mean() for a in out.aux)
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    optimizer.step()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("output_size", [(224, 224), (352, 704), (480, 640), (37, 53)])
def test_output_shapes(tiny_model_config, batch, output_size):
    model = SpaceClip(tiny_model_config).eval()
    with torch.inference_mode():
        out = model(torch.randn(batch, 3, 224, 224), output_size=output_size)
    assert out.depth.shape == (batch, 1, *output_size)
    assert out.aux == []  # auxiliary maps exist only in training mode
    assert torch.all(out.depth >= 0)  # ReLU head: metric depth is never negative


def test_training_mode_returns_weighted_aux_maps(tiny_model_config):
    model = SpaceClip(tiny_model_config).train()
    out = model(torch.randn(2, 3, 224, 224), output_size=(64, 96))
    assert [a.shape for a in out.aux] == [(2, 1, 64, 96)] * 3
    decoder = DecoderConfig(channels=(32, 16, 16, 8), aux_heads=False)
    no_aux = SpaceClip(ModelConfig(backbone=tiny_model_config.backbone, decoder=decoder)).train()
    assert no_aux(torch.randn(2, 3, 224, 224), output_size=(64, 96)).aux == []


@pytest.mark.slow  # full-size SigLIP tower
def test_siglip_backbone_with_reference_decoder():
    model = SpaceClip(ModelConfig(backbone=BackboneConfig(name="ViT-B-16-SigLIP"))).eval()
    bb = model.backbone
    assert type(bb).__name__ == "TimmTrunkBackbone"
    assert (bb.input_size, bb.patch_size, bb.width, bb.num_layers) == ((224, 224), 16, 768, 12)
    assert bb.mean == pytest.approx((0.5, 0.5, 0.5)) and bb.std == pytest.approx((0.5, 0.5, 0.5))
    assert model.parameter_counts()["trainable_decoder"] == 12_050_996
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 224, 224), output_size=(120, 160))
        feats = bb(torch.randn(1, 3, 224, 224))
    assert out.depth.shape == (1, 1, 120, 160)
    assert len(feats.hidden) == 13 and feats.hidden[0].shape == (1, 196, 768)  # no class token
    assert model.image_embedding(out.global_features).shape == (1, 768)


def test_local_weights_file_gives_same_features(tmp_path, tiny_backbone_config):
    source = build_backbone(tiny_backbone_config)
    path = save_vision_weights(source, tmp_path / "vision.safetensors")
    loaded = build_backbone(
        BackboneConfig(name="ViT-B-16", pretrained=str(path), vision_overrides=tiny_backbone_config.vision_overrides)
    )
    images = torch.randn(2, 3, 224, 224)
    a, b = source(images), loaded(images)
    for ha, hb in zip(a.hidden, b.hidden):
        assert torch.equal(ha, hb)
    assert torch.equal(a.global_features, b.global_features)
    # A fresh random tower differs, so the equality above is not trivially true.
    other = build_backbone(tiny_backbone_config)
    assert not torch.equal(other(images).global_features, a.global_features)


def test_full_open_clip_checkpoint_file_is_accepted(tmp_path, tiny_backbone_config):
    source = build_backbone(tiny_backbone_config)
    full = {f"visual.{k}": v for k, v in source.visual.state_dict().items()}
    full["text_projection"] = torch.zeros(4, 4)  # text keys are ignored
    torch.save({"state_dict": full}, tmp_path / "clip.pt")
    overrides = tiny_backbone_config.vision_overrides
    config = BackboneConfig(name="ViT-B-16", pretrained=str(tmp_path / "clip.pt"), vision_overrides=overrides)
    loaded = build_backbone(config)
    images = torch.randn(1, 3, 224, 224)
    assert torch.equal(source(images).global_features, loaded(images).global_features)


def test_bad_backbone_arguments_explain_themselves(tmp_path, tiny_backbone_config):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        build_backbone(BackboneConfig(name="ViT-B-16", pretrained=str(tmp_path / "missing.safetensors")))
    with pytest.raises(ValueError, match="neither a file nor a pretrained tag"):
        build_backbone(BackboneConfig(name="ViT-B-16", pretrained="not-a-tag"))
    with pytest.raises(ValueError, match="unknown open_clip model"):
        build_backbone(BackboneConfig(name="ViT-Q-99"))
    source = build_backbone(tiny_backbone_config)
    path = save_vision_weights(source, tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="do not fit the vision tower"):
        build_backbone(BackboneConfig(name="ViT-B-16", pretrained=str(path)))  # full-width tower


def test_decoder_rejects_layers_the_encoder_lacks(tiny_backbone_config):
    with pytest.raises(ValueError, match="encoder has layers 0..12"):
        SpaceClip(ModelConfig(backbone=tiny_backbone_config, decoder=DecoderConfig(semantic_layers=(13, 9, 6, 3))))
    with pytest.raises(ValueError, match="one semantic layer per stage"):
        DecoderConfig(channels=(256, 128), semantic_layers=(12, 9, 6))


def test_resize_and_normalize():
    images = torch.full((1, 3, 100, 50), 0.5)
    out = resize_and_normalize(images, (224, 224), (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert out.shape == (1, 3, 224, 224)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        resize_and_normalize(torch.zeros(3, 10, 10), (224, 224), (0, 0, 0), (1, 1, 1))
