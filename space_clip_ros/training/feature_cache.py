"""On-disk cache of the frozen backbone's outputs, so that each image is encoded once per run set-up.

The backbone never trains, so the features of a given encoder input never change. The cache keeps,
per training image, the token maps of the layers the decoder reads (``decoder.required_layers``)
and the global vector, for the image *and its mirror image* (horizontal flip is the one
augmentation that survives caching: the loader picks one of the two versions at random).

Keys:
* a folder per backbone identity: ``BackboneConfig.identity()``, a digest of the weights (random
  backbones and re-used file names must not collide), encoder input size, mean/std and storage
  dtype, hashed (``identity.json`` inside says what it is);
* a file per image content: a hash of the exact [0, 1] float crop that is fed to the encoder
  (shape included). A different crop, resize or colour of the same file is a different key, so
  a stale entry can never be read.

Storage: safetensors, one file per image, features in float16 by default (half the space of
float32; the decoder gets them back as float32, rounded to fp16 precision) or float32 (exact).
For ViT-B/16 and the reference decoder (7 layers x 196 tokens x 768 + global, two orientations)
that is about 4.2 MB per image in float16.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ..fileio import atomic_write, atomic_write_text
from ..model import BackboneFeatures, SpaceClip, hash_weights
from ..model.preprocess import resize_and_normalize

logger = logging.getLogger(__name__)

CACHE_FORMAT = "space_clip_ros.feature_cache"
CACHE_VERSION = 1
DTYPES = {"float16": torch.float16, "float32": torch.float32}
ORIENTATIONS = ("plain", "mirror")


def weights_digest(module: torch.nn.Module) -> str:
    """Hash of a module's weights: two random-weight backbones (or two files with one name) differ."""
    return hash_weights(hashlib.blake2b(digest_size=16), module).hexdigest()


def cache_identity(model: SpaceClip, dtype: str) -> dict[str, Any]:
    """What must match for two runs to share cached features."""
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "backbone": model.config.backbone.identity(),
        "weights": weights_digest(model.backbone),
        "input_size": list(model.input_size),
        "mean": [round(v, 10) for v in model.mean],
        "std": [round(v, 10) for v in model.std],
        "dtype": dtype,
    }


def image_key(image: torch.Tensor) -> str:
    """Hash of a (3, H, W) [0, 1] float crop exactly as it is fed to the encoder (shape included)."""
    data = image.detach().to(device="cpu", dtype=torch.float32).contiguous()
    digest = hashlib.blake2b(digest_size=20)
    digest.update(str(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


@dataclass
class CachedFeatures:
    """Features of one image in one orientation, as stored (on the CPU, storage dtype)."""

    layers: dict[int, torch.Tensor]  # layer -> (N, width)
    global_features: torch.Tensor  # (width,)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def total(self) -> int:
        return self.hits + self.misses


class FeatureCache:
    """A folder of cached backbone features for one backbone identity.

    Decoders reading other layers share the folder: an entry without a needed layer is a miss, and
    re-encoding it adds the layers to the file.

    Args:
        root: the cache folder given by ``data.feature_cache``.
        model: the model whose backbone is cached (fixes identity, layers and grid).
        dtype: ``float16`` or ``float32`` storage.
    """

    def __init__(self, root: str | os.PathLike, model: SpaceClip, dtype: str = "float16") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"feature cache dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.identity = cache_identity(model, dtype)
        identity_text = json.dumps(self.identity, sort_keys=True)
        self.folder = Path(root) / hashlib.sha256(identity_text.encode()).hexdigest()[:16]
        self.layers = tuple(model.decoder.required_layers)
        self.grid = tuple(model.backbone.grid_size)
        self.stats = CacheStats()
        self.folder.mkdir(parents=True, exist_ok=True)
        identity_file = self.folder / "identity.json"
        if not identity_file.exists():
            atomic_write_text(identity_file, identity_text + "\n")

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def _names(self) -> list[str]:
        return [f"{o}.layer_{layer}" for o in ORIENTATIONS for layer in self.layers] + [
            f"{o}.global" for o in ORIENTATIONS
        ]

    def contains(self, key: str) -> bool:
        """An entry with every tensor this decoder reads (reads the file header only)."""
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as handle:
                stored = set(handle.keys())
        except Exception:  # damaged: treated as absent and rewritten
            return False
        return set(self._names()) <= stored

    def load(self, key: str) -> dict[str, CachedFeatures] | None:
        """Both orientations of an image, or ``None`` (a miss) when absent or lacking a layer."""
        path = self.path(key)
        if not path.is_file():
            self.stats.misses += 1
            return None
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # a damaged file is a miss: it will be recomputed
            logger.warning("feature cache entry %s is unreadable (%s); recomputing it", path, exc)
            self.stats.misses += 1
            return None
        out = {}
        for orientation in ORIENTATIONS:
            names = [f"{orientation}.layer_{layer}" for layer in self.layers]
            if any(name not in tensors for name in names):
                self.stats.misses += 1
                return None
            out[orientation] = CachedFeatures(
                layers={layer: tensors[name] for layer, name in zip(self.layers, names)},
                global_features=tensors[f"{orientation}.global"],
            )
        self.stats.hits += 1
        return out

    def store(self, key: str, features: Mapping[str, CachedFeatures]) -> None:
        tensors = {}
        for orientation in ORIENTATIONS:
            entry = features[orientation]
            for layer in self.layers:
                tensors[f"{orientation}.layer_{layer}"] = entry.layers[layer].to(self.dtype).contiguous()
            tensors[f"{orientation}.global"] = entry.global_features.to(self.dtype).contiguous()
        path = self.path(key)
        if path.is_file():
            # Another decoder (other layers) cached this image before: keep its layers too.
            with contextlib.suppress(Exception):
                tensors = {**load_file(str(path)), **tensors}
        # Several processes may fill one cache: a reader must never see a half-written file.
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": CACHE_FORMAT}))

    @torch.no_grad()
    def encode(self, model: SpaceClip, images: torch.Tensor) -> list[dict[str, CachedFeatures]]:
        """Run the backbone on a batch of [0, 1] crops and their mirrors (one forward pass)."""
        batch = images.shape[0]
        both = torch.cat([images, torch.flip(images, dims=(-1,))])
        features = model.forward_features(resize_and_normalize(both, model.input_size, model.mean, model.std))
        out = []
        for i in range(batch):
            entry = {}
            for orientation, j in zip(ORIENTATIONS, (i, batch + i)):
                entry[orientation] = CachedFeatures(
                    layers={layer: features.hidden[layer][j].to("cpu", self.dtype) for layer in self.layers},
                    global_features=features.global_features[j].to("cpu", self.dtype),
                )
            out.append(entry)
        return out

    def fill(
        self,
        model: SpaceClip,
        dataset: Dataset,
        device: torch.device,
        indices: Sequence[int] | None = None,
        batch_size: int = 16,
        progress: bool = False,
    ) -> CacheStats:
        """Encode every image of ``dataset`` (or of ``indices``) that is not cached yet.

        ``dataset`` must return the exact crops training will use (deterministic, no colour
        augmentation) under ``"image"``. Returns hits and misses of this pass.
        """
        from tqdm import tqdm

        stats = CacheStats()
        indices = list(range(len(dataset))) if indices is None else list(indices)
        pending: list[tuple[str, torch.Tensor]] = []

        def flush() -> None:
            if not pending:
                return
            images = torch.stack([img for _, img in pending]).to(device)
            for (key, _), entry in zip(pending, self.encode(model, images)):
                self.store(key, entry)
            pending.clear()

        for index in tqdm(indices, desc="feature cache", disable=not progress):
            sample = dataset[index]
            if sample is None:
                continue
            image = sample["image"]
            key = image_key(image)
            if self.contains(key):
                stats.hits += 1
                continue
            stats.misses += 1
            if pending and pending[0][1].shape != image.shape:
                flush()  # batch only crops of one size
            pending.append((key, image))
            if len(pending) >= batch_size:
                flush()
        flush()
        logger.info("feature cache %s: %d hits, %d computed", self.folder, stats.hits, stats.misses)
        return stats


class CachedFeatureDataset(Dataset):
    """Training samples whose image is replaced by its cached backbone features.

    ``base`` must yield the deterministic crops the cache was filled with. Each item picks the
    plain or the mirror version with probability 0.5 (torch RNG, so DataLoader worker seeding
    applies) and flips the depth to match. Items: ``layer_<k>`` (N, width), ``global`` (width,),
    ``depth`` (1, H, W), ``flipped`` (bool), ``focal``, ``path``.
    """

    def __init__(self, base: Dataset, cache: FeatureCache, hflip: bool = True) -> None:
        self.base = base
        self.cache = cache
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        sample = self.base[index]
        if sample is None:
            return None
        key = image_key(sample["image"])
        entry = self.cache.load(key)
        if entry is None:
            raise KeyError(
                f"feature cache has no entry for {sample.get('path', index)} (key {key}); it is filled before "
                "training. On a multi-node run, data.feature_cache must be on a file system all nodes share"
            )
        flipped = bool(self.hflip and torch.rand(()) < 0.5)
        chosen = entry["mirror" if flipped else "plain"]
        depth = sample["depth"]
        item = {f"layer_{layer}": tokens for layer, tokens in chosen.layers.items()}
        item.update(
            {
                "global": chosen.global_features,
                "depth": torch.flip(depth, dims=(-1,)) if flipped else depth,
                "flipped": flipped,
                "focal": sample.get("focal", 0.0),
                "path": sample.get("path", ""),
            }
        )
        return item


def batch_to_features(batch: Mapping[str, Any], grid: tuple[int, int], device: torch.device) -> BackboneFeatures:
    """A collated :class:`CachedFeatureDataset` batch as the decoder's input (float32 on ``device``)."""
    hidden = {
        int(name.split("_", 1)[1]): tensor.to(device, torch.float32, non_blocking=True)
        for name, tensor in batch.items()
        if name.startswith("layer_")
    }
    global_features = batch["global"].to(device, torch.float32, non_blocking=True)
    return BackboneFeatures(hidden=hidden, global_features=global_features, grid=grid)  # type: ignore[arg-type]

