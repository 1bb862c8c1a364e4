"""Training augmentations (SPEC section 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from space_clip_ros.training.augment import (
    Augmenter,
    AugmenterConfig,
    AugmentParams,
    adjust_colour,
    centre_crop_window,
    hflip,
    random_crop_window,
    rotate,
)


def make_pair(height: int = 48, width: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.random((height, width, 3), dtype=np.float32)
    # Depth on a coarse set of distinct values, some invalid, so "values from the original set" is testable.
    depth = rng.choice(np.array([0.0, 1.25, 2.5, 3.75, 7.0, 9.5], dtype=np.float32), size=(height, width))
    return image, depth


def test_flip_mirrors_image_and_depth_together():
    image, depth = make_pair()
    flipped_image, flipped_depth = hflip(image, depth)
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    np.testing.assert_array_equal(flipped_depth, depth[:, ::-1])
    # Through the pipeline: a forced flip keeps the image/depth pixel correspondence.
    out_image, out_depth = Augmenter().apply(image, depth, AugmentParams(flip=True))
    np.testing.assert_array_equal(out_image[:, 0], image[:, -1])
    np.testing.assert_array_equal(out_depth[:, 0], depth[:, -1])


def test_rotation_keeps_depth_values_from_the_original_set():
    # Large enough that even 0.37 degrees moves the corners by more than half a pixel.
    image, depth = make_pair(160, 320)
    for degrees in (-1.0, -0.37, 0.5, 1.0):
        rotated_image, rotated_depth = rotate(image, depth, degrees)
        assert rotated_image.shape == image.shape and rotated_depth.shape == depth.shape
        assert set(np.unique(rotated_depth)) <= set(np.unique(depth)) | {0.0}
        assert rotated_image.min() >= 0.0 and rotated_image.max() <= 1.0  # bicubic overshoot clipped
        assert not np.array_equal(rotated_depth, depth)
    # Zero degrees is the identity for depth (nearest) and nearly so for the image.
    same_image, same_depth = rotate(image, depth, 0.0)
    np.testing.assert_array_equal(same_depth, depth)
    np.testing.assert_allclose(same_image, image, atol=1e-5)


def test_rotation_angle_stays_within_one_degree():
    augmenter = Augmenter(AugmenterConfig(crop_size=None))
    rng = np.random.default_rng(0)
    angles = [augmenter.sample((48, 96), rng).rotation_deg for _ in range(300)]
    assert max(np.abs(angles)) <= 1.0
    assert min(angles) < -0.8 and max(angles) > 0.8  # the whole range is used


def test_colour_factors_are_bounded_and_output_clipped():
    augmenter = Augmenter(AugmenterConfig(crop_size=None))
    rng = np.random.default_rng(1)
    params = [augmenter.sample((48, 96), rng) for _ in range(400)]
    jittered = [p for p in params if p.gamma is not None]
    assert 150 < len(jittered) < 250  # probability 0.5
    for p in jittered:
        assert 0.9 <= p.gamma <= 1.1 and 0.9 <= p.brightness <= 1.1
        assert all(0.9 <= f <= 1.1 for f in p.channel_factors)
    flips = sum(p.flip for p in params)
    assert 150 < flips < 250  # probability 0.5

    grey = np.full((4, 4, 3), 0.5, dtype=np.float32)
    darkest = adjust_colour(grey, 1.1, 0.9, (0.9, 0.9, 0.9))
    brightest = adjust_colour(grey, 0.9, 1.1, (1.1, 1.1, 1.1))
    np.testing.assert_allclose(darkest, 0.5**1.1 * 0.81, rtol=1e-5)
    np.testing.assert_allclose(brightest, 0.5**0.9 * 1.21, rtol=1e-5)
    assert adjust_colour(np.ones((2, 2, 3), np.float32), 1.0, 1.1, (1.1, 1.0, 0.9)).max() == 1.0
    per_channel = adjust_colour(grey, 1.0, 1.0, (0.9, 1.0, 1.1))
    np.testing.assert_allclose(per_channel[0, 0], [0.45, 0.5, 0.55], rtol=1e-6)


def test_crop_has_the_configured_size_and_cuts_a_window():
    image, depth = make_pair(60, 120)
    augmenter = Augmenter(AugmenterConfig(rotation=False, flip=False, colour=False, crop_size=(32, 64)))
    rng = np.random.default_rng(2)
    corners = set()
    for _ in range(20):
        params = augmenter.sample(depth.shape, rng)
        out_image, out_depth = augmenter.apply(image, depth, params)
        assert out_image.shape == (32, 64, 3) and out_depth.shape == (32, 64)
        top, left = params.crop_top_left
        assert 0 <= top <= 60 - 32 and 0 <= left <= 120 - 64
        np.testing.assert_array_equal(out_depth, depth[top : top + 32, left : left + 64])
        corners.add((top, left))
    assert len(corners) > 10  # random placement
    assert random_crop_window((32, 64), (32, 64), rng) == (0, 0)
    assert centre_crop_window((60, 120), (32, 64)) == (14, 28)
    with pytest.raises(ValueError, match="does not fit"):
        random_crop_window((30, 64), (32, 64), rng)


def test_nyu_recipe_keeps_the_full_image_and_disabled_is_identity():
    image, depth = make_pair(48, 64)
    out_image, out_depth = Augmenter(AugmenterConfig.nyu())(image, depth, np.random.default_rng(3))
    assert out_image.shape == image.shape and out_depth.shape == depth.shape
    same_image, same_depth = Augmenter(AugmenterConfig.disabled())(image, depth, np.random.default_rng(3))
    np.testing.assert_array_equal(same_image, image)
    np.testing.assert_array_equal(same_depth, depth)
    kitti = AugmenterConfig.kitti()
    assert kitti.crop_size == (352, 704) and kitti.max_rotation_deg == 1.0


def test_centre_crop_mode_is_deterministic():
    image, depth = make_pair(60, 120)
    augmenter = Augmenter(
        AugmenterConfig(rotation=False, flip=False, colour=False, crop_size=(32, 64), random_crop=False)
    )
    _, first = augmenter(image, depth, np.random.default_rng(0))
    _, second = augmenter(image, depth, np.random.default_rng(99))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, depth[14:46, 28:92])


@pytest.mark.parametrize(
    "make_rng", [lambda: np.random.default_rng(7), lambda: torch.Generator().manual_seed(7)]
)
def test_same_generator_seed_gives_the_same_augmentation(make_rng):
    image, depth = make_pair(60, 120)
    augmenter = Augmenter(AugmenterConfig(crop_size=(32, 64)))
    first = augmenter(image, depth, make_rng())
    second = augmenter(image, depth, make_rng())
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[0].dtype == np.float32 and first[0].flags["C_CONTIGUOUS"]
    draws = {augmenter.sample((60, 120), rng).crop_top_left for rng in [make_rng()] for _ in range(10)}
    assert len(draws) > 1
