"""The on-disk feature cache: keys, hits and misses, exact features, and training from it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_train_helpers import street_config

from space_clip_ros.model import ModelConfig, SpaceClip
from space_clip_ros.model.preprocess import resize_and_normalize
from space_clip_ros.training.feature_cache import (
    CachedFeatureDataset,
    FeatureCache,
    batch_to_features,
    image_key,
)
from space_clip_ros.training.trainer import Trainer


class ImageList(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        depth = torch.linspace(1.0, 5.0, image.shape[-1]).expand(1, *image.shape[-2:]).clone()
        return {"image": image, "depth": depth, "focal": 100.0, "path": f"img{index}.png"}


@pytest.fixture(scope="module")
def model(tiny_model_config):
    torch.manual_seed(0)
    return SpaceClip(tiny_model_config).eval()


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, 40, 56, generator=generator) for _ in range(3)]


def _backbone(model, images):
    return model.forward_features(resize_and_normalize(images, model.input_size, model.mean, model.std))


def test_hits_misses_and_keys(model, images, tmp_path):
    cache = FeatureCache(tmp_path, model, "float16")
    first = cache.fill(model, ImageList(images), torch.device("cpu"), batch_size=2)
    assert (first.hits, first.misses) == (0, 3)
    assert len(list(cache.folder.glob("*/*.safetensors"))) == 3 and (cache.folder / "identity.json").is_file()
    second = cache.fill(model, ImageList(images), torch.device("cpu"))
    assert (second.hits, second.misses) == (3, 0)

    # Another crop of the same picture is another encoder input: a miss, never a stale hit.
    shifted = [images[0][:, 1:, :], images[1]]
    third = FeatureCache(tmp_path, model, "float16").fill(model, ImageList(shifted), torch.device("cpu"))
    assert (third.hits, third.misses) == (1, 1)
    assert image_key(images[0]) != image_key(images[0][:, 1:, :])
    assert image_key(images[0]) == image_key(images[0].clone())

    # Another backbone identity (or storage dtype) uses another folder.
    other_config = ModelConfig(
        backbone=dataclasses.replace(model.config.backbone, vision_overrides={"width": 64, "head_width": 16}),
        decoder=model.config.decoder,
    )
    other = FeatureCache(tmp_path, SpaceClip(other_config), "float16")
    assert other.folder != cache.folder and other.load(image_key(images[0])) is None
    assert FeatureCache(tmp_path, model, "float32").folder != cache.folder


def test_a_decoder_reading_other_layers_misses_then_shares_the_entry(model, images, tmp_path):
    cache = FeatureCache(tmp_path, model, "float16")
    cache.fill(model, ImageList(images), torch.device("cpu"))
    decoder = dataclasses.replace(model.config.decoder, structural_layers=(5, 4))
    other = SpaceClip(ModelConfig(backbone=model.config.backbone, decoder=decoder))
    other.backbone = model.backbone  # same frozen weights, other decoder layers
    other_cache = FeatureCache(tmp_path, other, "float16")
    assert other_cache.folder == cache.folder
    first = other_cache.fill(other, ImageList(images), torch.device("cpu"))
    assert (first.hits, first.misses) == (0, 3)  # layers 4 and 5 were not stored
    assert other_cache.load(image_key(images[0])) is not None
    assert cache.load(image_key(images[0])) is not None  # the first decoder's layers are still there
    again = cache.fill(model, ImageList(images), torch.device("cpu"))
    assert (again.hits, again.misses) == (3, 0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cached_features_equal_the_backbone(model, images, tmp_path, dtype):
    cache = FeatureCache(tmp_path, model, dtype)
    cache.fill(model, ImageList(images), torch.device("cpu"))
    batch = torch.stack(images)
    # The cache encodes an image and its mirror in one pass; so does the reference (same batch, same kernels).
    both = _backbone(model, torch.cat([batch, torch.flip(batch, dims=(-1,))]))
    storage = getattr(torch, dtype)
    for i, image in enumerate(images):
        entry = cache.load(image_key(image))
        assert entry is not None
        assert set(entry["plain"].layers) == set(model.decoder.required_layers)
        for orientation, row in (("plain", i), ("mirror", len(images) + i)):
            for layer in model.decoder.required_layers:
                expected = both.hidden[layer][row].to(storage)  # fp16: exactly the rounded backbone output
                assert torch.equal(entry[orientation].layers[layer], expected)
            assert torch.equal(entry[orientation].global_features, both.global_features[row].to(storage))
    assert cache.stats.hits == len(images)


def test_decoding_cached_features_equals_running_the_model(model, images, tmp_path):
    cache = FeatureCache(tmp_path, model, "float32")
    cache.fill(model, ImageList(images), torch.device("cpu"))
    dataset = CachedFeatureDataset(ImageList(images), cache, hflip=False)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(images))])
    features = batch_to_features(batch, cache.grid, torch.device("cpu"))
    with torch.no_grad():
        from_cache = model.decode(features, output_size=(40, 56)).depth
        direct = model(resize_and_normalize(torch.stack(images), model.input_size, model.mean, model.std),
                       output_size=(40, 56)).depth
    torch.testing.assert_close(from_cache, direct, rtol=1e-5, atol=1e-5)

    # With flips on, a flipped item carries the mirror features and the mirrored depth.
    flipping = CachedFeatureDataset(ImageList(images), cache, hflip=True)
    torch.manual_seed(0)
    items = [flipping[0] for _ in range(16)]
    assert {item["flipped"] for item in items} == {True, False}
    entry = cache.load(image_key(images[0]))
    for item in items:
        orientation = "mirror" if item["flipped"] else "plain"
        assert torch.equal(item["global"], entry[orientation].global_features)
        depth = ImageList(images)[0]["depth"]
        assert torch.equal(item["depth"], torch.flip(depth, dims=(-1,)) if item["flipped"] else depth)


@pytest.mark.slow
def test_training_with_the_cache_fills_once_and_reuses(tmp_path):
    overrides = ["data.feature_cache=" + str(tmp_path / "cache"), "train.epochs=1", "train.max_steps_per_epoch=2",
                 "data.batch_size=4", "log.tensorboard=false", "data.val_fraction=0.1"]
    first = Trainer(street_config(tmp_path, [*overrides, "run.name=one"]), tmp_path / "one")
    n_train = len(first.train_base)
    assert (first.cache_fill_stats.hits, first.cache_fill_stats.misses) == (0, n_train)
    augment = first.train_base.augmenter.config
    assert not (augment.rotation or augment.colour or augment.flip or augment.random_crop)  # documented cost
    summary = first.fit()
    assert summary.history[0]["train"]["steps"] == 2
    assert first.cache.stats.hits >= 8 and first.cache.stats.misses == 0  # the loop read from the cache
    second = Trainer(street_config(tmp_path, [*overrides, "run.name=two"]), tmp_path / "two")
    assert (second.cache_fill_stats.hits, second.cache_fill_stats.misses) == (n_train, 0)
