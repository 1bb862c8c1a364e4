"""Depth datasets over KITTI, NYU Depth v2 and plain folders (real or synthetic, same layouts).

A sample is a dict:
    ``image``: float32 tensor (3, H, W), RGB in [0, 1] (the backbone's mean/std is applied by the
    model side, not here); ``depth``: float32 tensor (1, H, W) in metres, 0 = invalid;
    ``focal``: float, pixels; ``path``: the RGB path as written in the split file.

Training mode (SPEC section 4): KITTI images first get BTS's kb crop (bottom-centred 352x1216),
then rotation, random crop (352x704 KITTI, none for NYU), flip and colour augmentation; depth
outside ``(min_depth, max_depth)`` is set to 0. Evaluation mode returns full images and raw depth
and leaves crops and depth caps to the evaluator.

Bad files never stop an epoch unless ``strict`` is set: a missing, unreadable or truncated file,
or an image whose size does not match its depth, is recorded and the next valid sample is
returned instead. The record lives in shared memory, so skips made inside DataLoader worker
processes are visible in the main process (``dataset.skipped``, ``dataset.log_skipped()``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from space_clip_ros.data.formats import (
    KITTI_DEPTH_SCALE,
    NYU_DEPTH_SCALE,
    CorruptFileError,
    FolderMeta,
    list_folder_frames,
    read_depth,
    read_folder_meta,
    read_rgb,
)
from space_clip_ros.training.augment import Augmenter, AugmenterConfig
from space_clip_ros.training.splits import SplitEntry, parse_split_file

LOGGER = logging.getLogger(__name__)

DatasetKind = Literal["kitti", "nyu", "folder"]
KB_CROP_SIZE = (352, 1216)  # BTS's crop of the KITTI frame (height, width), bottom-centred

# Per-sample status codes kept in the shared status tensor.
_UNKNOWN, _OK, _MISSING, _CORRUPT, _WRONG_SIZE = 0, 1, 2, 3, 4
_REASONS = {_MISSING: "missing file", _CORRUPT: "unreadable or truncated file", _WRONG_SIZE: "wrong size"}
_WARN_FIRST = 5  # bad files logged one by one (per process) before going quiet


class BadSampleError(RuntimeError):
    """A sample could not be loaded and ``strict`` mode is on."""


class _WrongSizeError(ValueError):
    pass


@dataclass
class DepthDatasetConfig:
    """Where a dataset lives and how to read it.

    Attributes:
        kind: ``kitti``, ``nyu`` or ``folder``.
        data_path: root the split's RGB paths are relative to (KITTI raw root, NYU ``sync`` or
            ``official_splits/test``, or the folder dataset's root).
        gt_path: root of the depth paths; defaults to ``data_path``.
        split_file: BTS split file; optional for ``folder`` (then every ``rgb/`` file is used) and
            when the dataset is given its entries directly (then it is not read; see
            :class:`DepthDataset`).
        depth_scale: PNG value / depth_scale = metres; default 256 (KITTI), 1000 (NYU) or the
            folder's ``intrinsics.yaml``.
        min_depth, max_depth: valid depth range in training mode (max default 80 KITTI, 10 NYU,
            unbounded for folders).
        mode: ``train`` (augment) or ``eval`` (full image, raw depth).
        augment: augmentation settings in training mode; default: the kind's release recipe
            (KITTI random 352x704 crops, no crop otherwise).
        kb_crop: apply BTS's bottom-centred ``kb_crop_size`` crop before augmenting; default on
            for KITTI training.
        strict: raise at the first bad file instead of skipping it.
        check_files: look for missing files when the dataset is built (a cheap stat per file).
        seed: base seed of the per-sample augmentation generators.
    """

    kind: DatasetKind
    data_path: str | Path
    gt_path: str | Path | None = None
    split_file: str | Path | None = None
    depth_scale: float | None = None
    min_depth: float = 1e-3
    max_depth: float | None = None
    mode: Literal["train", "eval"] = "train"
    augment: AugmenterConfig | None = None
    kb_crop: bool | None = None
    kb_crop_size: tuple[int, int] = KB_CROP_SIZE
    strict: bool = False
    check_files: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("kitti", "nyu", "folder"):
            raise ValueError(f"unknown dataset kind {self.kind!r}; expected kitti, nyu or folder")
        if self.mode not in ("train", "eval"):
            raise ValueError(f"unknown mode {self.mode!r}; expected train or eval")


@dataclass
class SkipReport:
    """What a dataset left out: entries without ground truth and bad files (path, reason)."""

    no_ground_truth: int = 0
    bad_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.no_ground_truth + len(self.bad_files)

    def summary(self, first: int = _WARN_FIRST) -> str:
        counts: dict[str, int] = {}
        for _, reason in self.bad_files:
            counts[reason] = counts.get(reason, 0) + 1
        parts = [f"{count} {reason}" for reason, count in sorted(counts.items())]
        if self.no_ground_truth:
            parts.append(f"{self.no_ground_truth} without ground truth")
        names = ", ".join(f"{path} ({reason})" for path, reason in self.bad_files[:first])
        text = f"skipped {self.total} samples: " + ", ".join(parts) if parts else "skipped 0 samples"
        return text + (f"; first: {names}" if names else "")


def _kb_crop(image: np.ndarray, depth: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """BTS's KITTI benchmark crop: ``size`` rows at the bottom, centred horizontally."""
    height, width = depth.shape
    crop_h, crop_w = size
    if height < crop_h or width < crop_w:
        raise _WrongSizeError(f"image {height}x{width} is smaller than the kb crop {crop_h}x{crop_w}")
    top, left = height - crop_h, (width - crop_w) // 2
    return image[top : top + crop_h, left : left + crop_w], depth[top : top + crop_h, left : left + crop_w]


class DepthDataset(Dataset):
    """RGB-D samples from a split file (or a folder), robust to bad files. See the module docstring.

    Args:
        config: where the dataset lives and how to read it.
        entries: the samples themselves, when the caller already has them (the trainer's list
            after the validation holdout); ``config.split_file`` is then not read, and only names
            the list in messages.
    """

    def __init__(self, config: DepthDatasetConfig, entries: Sequence[SplitEntry] | None = None) -> None:
        if entries is None and config.split_file is None and config.kind != "folder":
            raise ValueError(f"a {config.kind} dataset needs a split_file (or its entries)")
        self.config = config
        self.data_root = Path(config.data_path)
        self.gt_root = Path(config.gt_path) if config.gt_path is not None else self.data_root
        self.expected_size: tuple[int, int] | None = None  # (H, W) every image must have, if known
        self.folder_meta: FolderMeta | None = None  # intrinsics.yaml of a folder dataset
        entries = self._read_entries() if entries is None else self._given_entries(entries)
        self.entries: list[SplitEntry] = [entry for entry in entries if entry.depth_path is not None]
        self.no_ground_truth = len(entries) - len(self.entries)
        if not self.entries:
            raise ValueError(f"{self._source()}: no entries with ground truth ({len(entries)} lines)")
        if self.no_ground_truth:
            LOGGER.info(
                "%s: %d of %d entries have no ground truth and are left out",
                self._source(),
                self.no_ground_truth,
                len(entries),
            )

        self.depth_scale = self._depth_scale()
        default_max = {"kitti": 80.0, "nyu": 10.0, "folder": math.inf}[config.kind]
        self.max_depth = config.max_depth if config.max_depth is not None else default_max
        augment = config.augment
        if augment is None:
            augment = AugmenterConfig.kitti() if config.kind == "kitti" else AugmenterConfig.nyu()
        self.augmenter = Augmenter(augment)
        self.kb_crop = config.kb_crop if config.kb_crop is not None else config.kind == "kitti"

        # Shared memory: DataLoader workers write what they find, the main process reads it.
        self._status = torch.zeros(len(self.entries), dtype=torch.int8).share_memory_()
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._warned = 0
        if config.check_files:
            self._check_files_exist()

    # ------------------------------------------------------------------ construction helpers

    def _source(self) -> str:
        return str(self.config.split_file or self.data_root)

    def _read_entries(self) -> list[SplitEntry]:
        config = self.config
        if config.kind != "folder":
            return parse_split_file(config.split_file)
        self._read_folder_meta()
        if config.split_file is not None:
            return parse_split_file(config.split_file)
        focal = self.folder_meta.intrinsics.fx
        return [SplitEntry(rgb, depth, focal) for rgb, depth in list_folder_frames(self.data_root)]

    def _given_entries(self, entries: Sequence[SplitEntry]) -> list[SplitEntry]:
        if self.config.kind == "folder":
            self._read_folder_meta()  # the camera's size and depth scale still come from the folder
        return list(entries)

    def _read_folder_meta(self) -> None:
        self.folder_meta = read_folder_meta(self.data_root)
        camera = self.folder_meta.intrinsics
        self.expected_size = (camera.height, camera.width)

    def _depth_scale(self) -> float:
        if self.config.depth_scale is not None:
            return float(self.config.depth_scale)
        if self.folder_meta is not None:
            return self.folder_meta.depth_scale
        return KITTI_DEPTH_SCALE if self.config.kind == "kitti" else NYU_DEPTH_SCALE

    def _check_files_exist(self) -> None:
        missing = 0
        for index in range(len(self.entries)):
            for path in self.file_paths(index):
                if not path.is_file():
                    self._mark_bad(index, _MISSING, f"{path} does not exist")
                    missing += 1
                    break
        if missing:
            LOGGER.warning(
                "%s: %d of %d samples have missing files and will be skipped",
                self._source(),
                missing,
                len(self.entries),
            )

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        return len(self.entries)

    def file_paths(self, index: int) -> tuple[Path, Path]:
        """Absolute (rgb, depth) paths of sample ``index``."""
        entry = self.entries[index]
        return self.data_root / entry.rgb_path, self.gt_root / str(entry.depth_path)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (seen by running workers too: the value is shared)."""
        self._epoch[0] = int(epoch)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(rgb path, reason) of every bad sample found so far, in any process."""
        status = self._status.numpy()
        bad = np.flatnonzero(status >= _MISSING)
        return [(self.entries[i].rgb_path, _REASONS[int(status[i])]) for i in bad]

    def skip_report(self) -> SkipReport:
        """Counts and names of everything left out so far."""
        return SkipReport(no_ground_truth=self.no_ground_truth, bad_files=self.skipped)

    def log_skipped(self) -> SkipReport:
        """Log a WARNING summary of the bad files found so far (call after an epoch)."""
        report = self.skip_report()
        if report.bad_files:
            LOGGER.warning("%s: %s", self._source(), report.summary())
        return report

    def __getitem__(self, index: int) -> dict:
        status = self._status
        n = len(self.entries)
        for attempt in range(n):
            candidate = (index + attempt) % n
            if int(status[candidate]) >= _MISSING:
                continue
            try:
                sample = self.load(candidate)
            except FileNotFoundError as error:
                self._mark_bad(candidate, _MISSING, str(error))
            except _WrongSizeError as error:
                self._mark_bad(candidate, _WRONG_SIZE, str(error))
            except (CorruptFileError, OSError, ValueError) as error:
                self._mark_bad(candidate, _CORRUPT, str(error))
            else:
                status[candidate] = _OK
                return sample
        raise RuntimeError(f"{self._source()}: no readable sample left ({self.skip_report().summary()})")

    def load(self, index: int) -> dict:
        """Load sample ``index`` without any fallback (errors propagate)."""
        entry = self.entries[index]
        rgb_path, depth_path = self.file_paths(index)
        rgb = read_rgb(rgb_path)
        depth = read_depth(depth_path, self.depth_scale)
        if rgb.shape[:2] != depth.shape:
            raise _WrongSizeError(
                f"{rgb_path} is {rgb.shape[0]}x{rgb.shape[1]} but {depth_path} is "
                f"{depth.shape[0]}x{depth.shape[1]}"
            )
        if self.expected_size is not None and depth.shape != self.expected_size:
            raise _WrongSizeError(
                f"{rgb_path} is {depth.shape[0]}x{depth.shape[1]}, intrinsics.yaml says "
                f"{self.expected_size[0]}x{self.expected_size[1]}"
            )
        image = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
        if self.config.mode == "train":
            image, depth = self._train_transform(image, depth, index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
            "focal": float(entry.focal),
            "path": entry.rgb_path,
        }

    # ------------------------------------------------------------------ internals

    def _train_transform(
        self, image: np.ndarray, depth: np.ndarray, index: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.kb_crop:
            image, depth = _kb_crop(image, depth, self.config.kb_crop_size)
        crop_size = self.augmenter.config.crop_size
        if (
            self.augmenter.config.crop
            and crop_size is not None
            and (depth.shape[0] < crop_size[0] or depth.shape[1] < crop_size[1])
        ):
            raise _WrongSizeError(
                f"image {depth.shape[0]}x{depth.shape[1]} is smaller than the training crop "
                f"{crop_size[0]}x{crop_size[1]}"
            )
        # One generator per (seed, epoch, sample): the same draw whatever worker loads it.
        rng = np.random.default_rng((self.config.seed, int(self._epoch[0]), index))
        image, depth = self.augmenter(image, depth, rng)
        in_range = (depth > self.config.min_depth) & (depth < self.max_depth)
        return image, np.where(in_range, depth, np.float32(0.0)).astype(np.float32)

    def _mark_bad(self, index: int, code: int, message: str) -> None:
        if self.config.strict:
            raise BadSampleError(
                f"{self._source()}: sample {index} ({self.entries[index].rgb_path}): "
                f"{_REASONS[code]}: {message}"
            )
        self._status[index] = code
        self._warned += 1
        if self._warned <= _WARN_FIRST:
            LOGGER.warning("skipping sample %d (%s): %s", index, _REASONS[code], message)
        elif self._warned == _WARN_FIRST + 1:
            LOGGER.warning("more bad samples; see dataset.log_skipped() for the total")
