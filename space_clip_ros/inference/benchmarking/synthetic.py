"""Stand-ins for trained weights and camera frames, for benchmarks and equivalence tests.

A freshly initialised decoder is a poor test object: its batch norms are identities (folding them
changes nothing) and its final ReLU clips most of the map to 0 m, so "relative depth error"
would be measured on zeros. :func:`make_decoder_realistic` gives the batch norms random running
statistics and affine parameters, then rescales the last convolution so that the model predicts
a spread of positive depths in metres on a given image. :func:`synthetic_camera_image` draws a
textured scene-like picture (gradients, shapes, sensor noise) instead of white noise, so that
encoder activations look like those of real frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...model import SpaceClip
from ...model.preprocess import pixels_from_frames


def synthetic_camera_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 RGB picture with smooth shading, rectangles, discs and mild noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), dtype=np.float32)
    for channel in range(3):
        a, b, c = rng.uniform(0.2, 0.8, 3)
        image[..., channel] = a * rows + b * (1.0 - cols) + c * 0.3
    for _ in range(12):
        top, left = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(height // 10, height // 2), rng.integers(width // 10, width // 2)
        image[top : top + h, left : left + w] = rng.uniform(0.0, 1.0, 3)
    for _ in range(6):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.05, 0.2) * height
        disc = (rows * height - cy) ** 2 + (cols * width - cx) ** 2 < radius**2
        image[disc] = rng.uniform(0.0, 1.0, 3)
    image += rng.normal(0.0, 0.02, image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@torch.no_grad()
def make_decoder_realistic(
    model: SpaceClip, image: np.ndarray, seed: int = 0, depth_median: float = 4.0, depth_spread: float = 1.5
) -> SpaceClip:
    """Give ``model``'s decoder trained-looking statistics, in place, and return the model.

    Batch norms get random running means/variances and affine parameters; the head's last
    convolution is then scaled and shifted so that, on ``image`` ((H, W, 3) uint8), the depth
    before the final ReLU has median ``depth_median`` metres and robust spread ``depth_spread``.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return torch.rand(shape, generator=generator) * (high - low) + low

    for module in model.decoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.2)
            module.running_var.copy_(uniform(channels, 0.5, 2.0))
            module.weight.copy_(uniform(channels, 0.5, 1.5))
            module.bias.copy_(torch.randn(channels, generator=generator) * 0.1)

    last_conv = model.decoder.head.net[1]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = pixels_from_frames(image, model.input_size, model.mean, model.std, device)
    # The pre-ReLU map: run the decoder with the final ReLU bypassed via a forward hook on the conv.
    captured: list[torch.Tensor] = []
    handle = last_conv.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().clone()))
    try:
        model(batch)
    finally:
        handle.remove()
    raw = captured[0].flatten().double()
    median = raw.median()
    spread = (raw - median).abs().median().clamp_min(1e-12)
    scale = depth_spread / spread
    last_conv.weight.mul_(scale.to(last_conv.weight.dtype))
    last_conv.bias.copy_(((last_conv.bias.double() - median) * scale + depth_median).to(last_conv.bias.dtype))
    model.train(was_training)
    return model
