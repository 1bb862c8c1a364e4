"""Training augmentations of the release (SPEC section 4).

In order: random rotation within +-1 degree (bicubic image, nearest depth), random crop (KITTI
352x704; NYU keeps the full 480x640), horizontal flip with p = 0.5, and with p = 0.5 gamma,
brightness and per-channel colour factors, each uniform in [0.9, 1.1], clipped to [0, 1].

Images are float32 (H, W, 3) RGB in [0, 1]; depth is float32 (H, W) metres with 0 = invalid.
Randomness comes only from the generator passed in (numpy ``Generator`` or ``torch.Generator``),
so a sample's augmentation is reproducible from its seed. Parameters are drawn first
(``Augmenter.sample``) and applied second (``Augmenter.apply``), so the same draw can be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

    RandomSource = np.random.Generator | torch.Generator


def uniform(rng: RandomSource, low: float, high: float, size: int | None = None) -> float | np.ndarray:
    """Uniform draw in [low, high) from a numpy or torch generator."""
    if isinstance(rng, np.random.Generator):
        return rng.uniform(low, high, size) if size is not None else float(rng.uniform(low, high))
    import torch  # only when a torch generator is in use; keeps this module light for numpy users

    values = torch.rand(1 if size is None else size, generator=rng, dtype=torch.float64).numpy()
    values = low + (high - low) * values
    return float(values[0]) if size is None else values


# ----------------------------------------------------------------------------------------------
# Single augmentations


def rotate(image: np.ndarray, depth: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the image centre (counter-clockwise for positive ``degrees``), keeping the size.

    The image is resampled bicubically (then clipped, since bicubic overshoots); depth uses
    nearest neighbour so no depth value is invented; uncovered corners become 0 in both.
    """
    height, width = depth.shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), degrees, 1.0)
    rotated_image = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    rotated_depth = cv2.warpAffine(
        depth, matrix, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return np.clip(rotated_image, 0.0, 1.0), rotated_depth


def crop(
    image: np.ndarray, depth: np.ndarray, top: int, left: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the window ``[top:top+height, left:left+width]`` out of both arrays."""
    return image[top : top + height, left : left + width], depth[top : top + height, left : left + width]


def random_crop_window(shape: tuple[int, int], size: tuple[int, int], rng: RandomSource) -> tuple[int, int]:
    """Top-left corner of a uniformly placed ``size`` window in an image of ``shape``."""
    height, width = shape
    crop_h, crop_w = size
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} does not fit in a {height}x{width} image")
    # Integer draw through uniform() so numpy and torch generators behave alike.
    top = min(int(uniform(rng, 0, height - crop_h + 1)), height - crop_h)
    left = min(int(uniform(rng, 0, width - crop_w + 1)), width - crop_w)
    return top, left


def centre_crop_window(shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the centred ``size`` window in an image of ``shape``."""
    height, width = shape
    crop_h, crop_w = size
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} does not fit in a {height}x{width} image")
    return (height - crop_h) // 2, (width - crop_w) // 2


def hflip(image: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and depth left-right together."""
    return image[:, ::-1], depth[:, ::-1]


def adjust_colour(
    image: np.ndarray,
    gamma: float,
    brightness: float,
    channel_factors: np.ndarray | tuple[float, float, float],
) -> np.ndarray:
    """``clip(image ** gamma * brightness * channel_factors, 0, 1)`` (the BTS colour augmentation)."""
    factors = np.asarray(channel_factors, dtype=np.float32).reshape(1, 1, 3)
    out = np.power(image, np.float32(gamma)) * np.float32(brightness) * factors
    return np.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class AugmenterConfig:
    """Which augmentations run and their ranges. Defaults: the KITTI recipe of SPEC section 4.

    ``crop_size`` of None keeps the full image (the NYU recipe); ``random_crop=False`` cuts the
    centre window instead of a random one (fixed-size inputs without randomness, e.g. when
    features are cached per image; switch off ``rotation``, ``flip`` and ``colour`` there too).
    """

    rotation: bool = True
    max_rotation_deg: float = 1.0
    crop: bool = True
    crop_size: tuple[int, int] | None = (352, 704)
    random_crop: bool = True
    flip: bool = True
    flip_prob: float = 0.5
    colour: bool = True
    colour_prob: float = 0.5
    gamma_range: tuple[float, float] = (0.9, 1.1)
    brightness_range: tuple[float, float] = (0.9, 1.1)
    channel_range: tuple[float, float] = (0.9, 1.1)

    @classmethod
    def kitti(cls) -> AugmenterConfig:
        """Release recipe for KITTI: random 352x704 crops."""
        return cls(crop_size=(352, 704))

    @classmethod
    def nyu(cls) -> AugmenterConfig:
        """Release recipe for NYU: the full 480x640 image, no crop."""
        return cls(crop_size=None)

    @classmethod
    def disabled(cls) -> AugmenterConfig:
        """No augmentation at all."""
        return cls(rotation=False, crop=False, flip=False, colour=False)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of augmentation parameters; None / False = that step is not applied."""

    rotation_deg: float | None = None
    crop_top_left: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = None
    flip: bool = False
    gamma: float | None = None
    brightness: float | None = None
    channel_factors: tuple[float, float, float] | None = None


class Augmenter:
    """Applies the configured augmentations to an (image, depth) pair."""

    def __init__(self, config: AugmenterConfig | None = None) -> None:
        self.config = config if config is not None else AugmenterConfig()

    def sample(self, shape: tuple[int, int], rng: RandomSource) -> AugmentParams:
        """Draw parameters for an image of ``shape`` (H, W); draws happen in pipeline order."""
        cfg = self.config
        rotation = uniform(rng, -cfg.max_rotation_deg, cfg.max_rotation_deg) if cfg.rotation else None
        crop_top_left = None
        if cfg.crop and cfg.crop_size is not None:
            if cfg.random_crop:
                crop_top_left = random_crop_window(shape, cfg.crop_size, rng)
            else:
                crop_top_left = centre_crop_window(shape, cfg.crop_size)
        flip = cfg.flip and uniform(rng, 0.0, 1.0) < cfg.flip_prob
        gamma = brightness = channels = None
        if cfg.colour and uniform(rng, 0.0, 1.0) < cfg.colour_prob:
            gamma = uniform(rng, *cfg.gamma_range)
            brightness = uniform(rng, *cfg.brightness_range)
            channels = tuple(float(v) for v in uniform(rng, *cfg.channel_range, size=3))
        return AugmentParams(
            rotation_deg=rotation,
            crop_top_left=crop_top_left,
            crop_size=cfg.crop_size if crop_top_left is not None else None,
            flip=bool(flip),
            gamma=gamma,
            brightness=brightness,
            channel_factors=channels,
        )

    def apply(
        self, image: np.ndarray, depth: np.ndarray, params: AugmentParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply a parameter draw; returns new contiguous float32 arrays."""
        if params.rotation_deg is not None:
            image, depth = rotate(image, depth, params.rotation_deg)
        if params.crop_top_left is not None and params.crop_size is not None:
            image, depth = crop(image, depth, *params.crop_top_left, *params.crop_size)
        if params.flip:
            image, depth = hflip(image, depth)
        if params.gamma is not None and params.brightness is not None and params.channel_factors is not None:
            image = adjust_colour(image, params.gamma, params.brightness, params.channel_factors)
        return (np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(depth, dtype=np.float32))

    def __call__(
        self, image: np.ndarray, depth: np.ndarray, rng: RandomSource
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample parameters from ``rng`` and apply them."""
        return self.apply(image, depth, self.sample(depth.shape[:2], rng))
