"""Decoder checkpoints: round trip, atomic files, and refusals that say what differs."""

from __future__ import annotations

import json

import pytest
import torch

from space_clip_ros.model import (
    BackboneConfig,
    CheckpointError,
    DecoderConfig,
    SpaceClip,
    checkpoint_paths,
    load_checkpoint,
    load_model,
    make_record,
    save_checkpoint,
    save_vision_weights,
)


def _trained_like(model: SpaceClip) -> SpaceClip:
    """Give the decoder non-default weights and BN statistics so a round trip is a real check."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
        for name, buf in model.decoder.named_buffers():
            if name.endswith("running_var"):
                buf.fill_(1.5)
    return model


def test_round_trip_gives_identical_depth(tmp_path, tiny_model_config):
    model = _trained_like(SpaceClip(tiny_model_config)).eval()
    weights_path = tmp_path / "vision.safetensors"
    save_vision_weights(model.backbone, weights_path)
    backbone = BackboneConfig(
        name="ViT-B-16", pretrained=str(weights_path), vision_overrides=tiny_model_config.backbone.vision_overrides
    )
    # The checkpoint records the backbone by weights file, as a real run with local weights would.
    model.config = type(model.config)(backbone=backbone, decoder=tiny_model_config.decoder)
    record = make_record(model, train_focal=518.8579, train_image_size=[480, 640], dataset="synthetic-nyu")
    path = save_checkpoint(tmp_path / "ckpt" / "best", model.decoder.state_dict(), record)
    assert path.name == "best.safetensors" and (tmp_path / "ckpt" / "best.json").is_file()
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]  # no temp files left

    # Nothing of the frozen backbone is written into a decoder checkpoint.
    state, loaded_record = load_checkpoint(path)
    assert not any(k.startswith(("backbone", "visual")) for k in state)
    assert sum(v.numel() for v in state.values()) < 0.5 * sum(v.numel() for v in model.backbone.parameters())
    assert loaded_record.train_focal == pytest.approx(518.8579)
    assert loaded_record.encoder_input_size == [224, 224]
    assert loaded_record.mean == pytest.approx(list(model.mean))

    reloaded, _ = load_model(tmp_path / "ckpt" / "best.json")
    reloaded.eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(images, (60, 80)).depth, model(images, (60, 80)).depth, rtol=0, atol=0)


def test_mismatched_backbone_or_decoder_is_refused_with_reasons(tmp_path, tiny_model_config):
    model = SpaceClip(tiny_model_config)
    save_checkpoint(tmp_path / "c", model.decoder.state_dict(), make_record(model))
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "c", backbone=BackboneConfig(name="ViT-B-16-SigLIP"))
    message = str(err.value)
    assert "backbone.name: model has 'ViT-B-16-SigLIP', checkpoint has 'ViT-B-16'" in message
    assert "backbone.vision_overrides.width" in message

    with pytest.raises(CheckpointError, match=r"decoder.use_film: model has False, checkpoint has True"):
        load_model(tmp_path / "c", decoder=DecoderConfig(channels=(32, 16, 16, 8), film_hidden=32, use_film=False))


def test_tampered_weights_are_refused(tmp_path, tiny_model_config):
    model = SpaceClip(tiny_model_config)
    state = model.decoder.state_dict()
    state.pop("head.net.1.bias")
    save_checkpoint(tmp_path / "c", state, make_record(model))
    with pytest.raises(CheckpointError, match="1 missing"):
        load_model(tmp_path / "c")


def test_missing_and_corrupt_files_say_what_to_do(tmp_path, tiny_model_config):
    with pytest.raises(CheckpointError, match="checkpoint file missing"):
        load_checkpoint(tmp_path / "nothing")
    model = SpaceClip(tiny_model_config)
    weights, record_path = checkpoint_paths(tmp_path / "c")
    save_checkpoint(tmp_path / "c", model.decoder.state_dict(), make_record(model))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated download
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(weights)
    record_path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a space_clip_ros decoder record"):
        load_checkpoint(weights)


def test_backbone_weights_are_never_written(tmp_path, tiny_model_config):
    model = SpaceClip(tiny_model_config)
    with pytest.raises(CheckpointError, match="backbone"):
        save_checkpoint(tmp_path / "c", model.state_dict(), make_record(model))
